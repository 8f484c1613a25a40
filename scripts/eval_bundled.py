#!/usr/bin/env python3
"""Measure the bundled generative models with `polychrome eval` and its instrument.

For each bundled model with a generative figure (emoji-stylegan, emoji-stargan,
photo-styles) this runs `metrics.api.evaluate_model` -- the path of `polychrome eval` --
on the dataset version the model was trained on (its meta), and writes:

  docs/quality/bundled_eval.json   per model: the command, commit and machine of its run and
                                   the whole result (the instrument included) or why there
                                   are no figures (a run of some --models keeps the others);
  <model>/metrics.json             the figures a card shows, each beside its instrument
                                   (see `card_metrics`); figures no instrument backs are
                                   dropped, facts that do not depend on one are kept.

An evaluator under the bar is not forced: the evaluation is retried with twice the
evaluator steps while the evaluator's CPU time for that dataset stays within
--evaluator-budget CPU-seconds; if it is still refused, the refusal is recorded and the
model's metrics.json carries no figure that needs it.

The datasets must be imported into POLYCHROME_HOME first, under the names and versions the
models record (a fresh home gives version 1; the held-out split is fixed by file stem):

  python3 <shared>/datasets/emoji_styles.py EMOJI_DIR --size 64
  polychrome data import EMOJI_DIR --name emoji
  python3 scripts/data/photo_styles.py PHOTO_DIR
  polychrome data import PHOTO_DIR --name photo-styles
  python scripts/eval_bundled.py
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "src" / "polychrome" / "assets" / "models"
OUT = REPO / "docs" / "quality" / "bundled_eval.json"
MODELS = ("emoji-stylegan", "emoji-stargan", "photo-styles")
# Facts of photo-styles' metrics.json that no evaluator measures (speed, memory, tiling,
# content kept): still true, so kept; its classifier's style accuracy had no instrument.
KEEP = {"photo-styles": ("commit", "held_out_pairs", "p50_seconds", "peak_rss_mib_12mp",
                         "source", "ssim_luma", "tiled_vs_whole_psnr_db")}
SOURCE = "scripts/eval_bundled.py (docs/quality/bundled_eval.json)"
_PER_STYLE = re.compile(r"^(?P<key>.+)\[(?P<style>[^\]]+)\]$")

sys.path.insert(0, str(REPO / "benchmarks"))
from common import run_facts, run_script  # noqa: E402  (benchmarks/common.py)


def per_style_dicts(flat: dict[str, Any]) -> dict[str, Any]:
    """Card figures with `key[style]` entries gathered into `key_per_style` {style: value}
    (the shape the model list and the page show as a per-style table)."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        m = _PER_STYLE.match(k)
        if m is None:
            out[k] = v
        else:
            out.setdefault(f"{m['key']}_per_style", {})[m["style"]] = v
    return out


def card_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """metrics.json figures from an evaluate_model result: the same figures `polychrome eval`
    records on a card (instrument.card_figures beside them), per style as dicts."""
    from polychrome.metrics.instrument import card_figures
    from polychrome.metrics.translation import card_row

    if "translation" in result:
        figures = card_row(result["translation"])
    else:
        figures = {**result["metrics"], **result["sample_accuracy"], "n": result["n"],
                   "n_real": result["n_real"], "seed": result["seed"]}
    return per_style_dicts({**figures, **card_figures(result["instrument"]),
                            "extractor": result["extractor"], "dataset": result["dataset"],
                            "split": result["split"], "source": SOURCE})


def evaluate_with_budget(model_dir: Path, *, n: int, split: str, budget_s: float,
                         max_steps: int, spent: dict[str, float]) -> dict[str, Any]:
    """evaluate_model, retried with twice the evaluator steps while refused and the dataset's
    evaluator CPU time (`spent`, by dataset) allows. {"status", "attempts", "result"?}."""
    from polychrome.errors import PolychromeError
    from polychrome.metrics.api import evaluate_model
    from polychrome.metrics.evaluator import DEFAULT_STEPS
    from polychrome.metrics.instrument import EvaluatorUnusable

    dataset = json.loads((model_dir / "config.json").read_text())["meta"]["dataset"]
    family = json.loads((model_dir / "config.json").read_text()).get("family", "noise")
    kwargs: dict[str, Any] = dict(record=False, n=n, split=split)
    if family == "noise":
        kwargs["metrics"] = ("fid", "kid", "pr")
    attempts: list[dict[str, Any]] = []
    steps: int | None = None  # first: the saved evaluator, or one trained with the default
    while True:
        t0 = time.process_time()
        try:
            result = evaluate_model(str(model_dir), evaluator_steps=steps, **kwargs)
        except EvaluatorUnusable as e:
            cpu = time.process_time() - t0
            spent[dataset] = spent.get(dataset, 0.0) + cpu
            attempts.append({"evaluator_steps": steps, "refused": str(e), "cpu_s": round(cpu, 1)})
            done = steps or DEFAULT_STEPS
            nxt = 2 * done
            # the next evaluator costs about nxt / done of this attempt
            if nxt > max_steps or spent[dataset] + cpu * nxt / done > budget_s:
                return {"status": "refused", "dataset": dataset, "attempts": attempts,
                        "evaluator_cpu_s": round(spent[dataset], 1)}
            steps = nxt
            continue
        except PolychromeError as e:  # recorded: why this model has no figures
            attempts.append({"evaluator_steps": steps, "error": str(e),
                             "code": getattr(e, "code", None)})
            return {"status": "not_measured", "dataset": dataset, "attempts": attempts}
        attempts.append({"evaluator_steps": steps,
                         "cpu_s": round(time.process_time() - t0, 1)})
        return {"status": "measured", "dataset": dataset, "attempts": attempts,
                "result": result}


def new_metrics(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A model's metrics.json: its instrument-backed figures (none when refused) and the kept
    facts of the old file."""
    old = json.loads((ASSETS / name / "metrics.json").read_text())
    kept = {k: old[k] for k in KEEP.get(name, ()) if k in old}
    if entry["status"] != "measured":
        return kept
    figures = card_metrics(entry["result"])
    if kept:  # the old facts keep their own source; the evaluation is one group of its own
        return {**kept, "evaluation": figures}
    return figures


def repo_relative(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry whose result names the model by its path in the repository (the JSON is
    committed: no machine's paths in it)."""
    result = entry.get("result")
    if not result or not Path(str(result.get("model", ""))).is_absolute():
        return entry
    path = Path(result["model"])
    rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    return {**entry, "result": {**result, "model": rel}}


def finite(value: Any) -> Any:
    """`value` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(args: argparse.Namespace) -> int:
    facts = run_facts()
    spent: dict[str, float] = {}
    entries: dict[str, Any] = {}
    for name in args.models:
        model_dir = ASSETS / name
        if not (model_dir / "config.json").is_file():
            print(f"error: no bundled model {name!r} in {ASSETS.relative_to(REPO)}",
                  file=sys.stderr)
            return 2
        split = "heldout"
        entry = evaluate_with_budget(model_dir, n=args.n, split=split,
                                     budget_s=args.evaluator_budget, max_steps=args.max_steps,
                                     spent=spent)
        entries[name] = {**entry, "run": facts}
        print(f"{name}: {entry['status']} "
              f"({', '.join(str(a.get('evaluator_steps') or 'default') for a in entry['attempts'])})",
              file=sys.stderr)
    out = Path(args.out)
    # models measured by an earlier run keep their entries (each records its own run)
    earlier = json.loads(out.read_text()).get("models", {}) if out.is_file() else {}
    report = {**facts, "n": args.n, "evaluator_budget_cpu_s": args.evaluator_budget,
              "max_evaluator_steps": args.max_steps,
              "models": {k: repo_relative(v) for k, v in {**earlier, **entries}.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(report), indent=1, sort_keys=True, allow_nan=False) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    if args.write_metrics:
        for name, entry in entries.items():
            path = ASSETS / name / "metrics.json"
            path.write_text(json.dumps(finite(new_metrics(name, entry)), indent=2, sort_keys=True,
                                       allow_nan=False) + "\n")
            print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--n", type=int, default=2000, help="samples per noise model")
    ap.add_argument("--evaluator-budget", type=float, default=600.0,
                    help="CPU-seconds of evaluator training per dataset before a refusal "
                         "stands")
    ap.add_argument("--max-steps", type=int, default=12000,
                    help="most evaluator steps to try")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-write-metrics", dest="write_metrics", action="store_false",
                    help="only write the JSON report")
    ap.add_argument("--threads", type=int, default=None)
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_script(main, parse()))
