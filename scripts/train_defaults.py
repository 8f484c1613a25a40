#!/usr/bin/env python3
"""The recipe for Polychrome's bundled default models (polychrome/assets/models/).

Steps, each also a plain `polychrome` command (printed as it runs):

  1. build the emoji styles set:   python3 <shared>/datasets/emoji_styles.py EMOJI_DIR --size 64
  2. import it:                     polychrome data import EMOJI_DIR --name emoji
  3. train (background-friendly, checkpointed, resumable with `polychrome train --resume`):
       python benchmarks/translation_quality.py --dataset emoji --minutes 45 --clock cpu \
           --threads 1 --steps 2700 --seed 1 --runs-dir RUNS --name emoji-stargan
         (stargan from scripts/defaults/emoji-stargan.yaml for 45 minutes of one core,
         measured: README's translation table), then continued on 2 threads:
       polychrome train --resume RUNS/emoji-stargan --steps 5000
         (stopped with Ctrl-C / SIGTERM when the session's time ran out: it checkpoints)
       polychrome train stylegan --dataset emoji --config scripts/defaults/emoji-stylegan.yaml \
           --steps 10000 --resolution 32 --seed 1 --run-dir RUNS/emoji-stylegan --name emoji-stylegan
  4. package:  python scripts/train_defaults.py package RUNS/emoji-stargan RUNS/emoji-stylegan \
                 --recipe "emoji-stargan=<the commands of step 3>"
     exports each run's EMA networks (latest checkpoint), measures them with `polychrome eval`
     (offline evaluator; translation metrics on the held-out split; FID/KID against the
     model at initialisation as a baseline), and writes config.json, model.safetensors,
     metrics.json and card.md into src/polychrome/assets/models/<name>/; the run's facts go
     to docs/quality/training_runs.json (also `python scripts/train_defaults.py record
     RUNS/<name>`) and the card's figures blocks are rendered from them and from
     metrics.json by scripts/render_docs.py.

Both configs train on the `train` split, so the fixed held-out emoji (by file name) stay
unseen for the translation metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "src" / "polychrome" / "assets" / "models"
QUALITY = REPO / "docs" / "quality"

CREDITS = """\
Training data: the emoji styles set built by `emoji_styles.py` from npm packages —
Google Noto Emoji (Apache-2.0), Twemoji (CC-BY-4.0), OpenMoji colour and line
(CC-BY-SA-4.0), Microsoft Fluent UI Emoji flat (MIT). The drawings belong to their
authors; these weights were trained from scratch by Polychrome on 32 px renderings."""


def _run_facts(run_dir: Path) -> dict:
    """Steps reached and wall-clock training time, read from the run's metrics.jsonl
    (each resumed segment restarts its clock, so segment times are summed)."""
    last_step, total, seg_max, prev, segments = 0, 0.0, 0.0, -1.0, 1
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            last_step = max(last_step, int(rec.get("step", 0)))
            t = float(rec.get("time", 0.0))
            if t < prev:  # a new segment (resume)
                total += seg_max
                seg_max = 0.0
                segments += 1
            seg_max, prev = max(seg_max, t), t
    return {"steps_logged": last_step, "train_seconds": round(total + seg_max, 1),
            "segments": segments}


def train_facts(run_dir: Path) -> dict:
    """What a card says of a run: steps reached, planned steps, wall-clock minutes (from
    metrics.jsonl, see `_run_facts`) and the resolved run config (`cfg`)."""
    import yaml

    logged = _run_facts(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    return {"steps": logged["steps_logged"], "planned_steps": int(cfg["steps"]),
            "minutes": logged["train_seconds"] / 60, "segments": logged["segments"],
            "cfg": cfg}


def run_record(run_dir: Path, package_dir: Path) -> dict:
    """What the docs may say of the run behind a bundled model, from the run's own files:
    the packaged checkpoint's step (its config.json), the steps the run logged and planned
    (metrics.jsonl, config.yaml), whether the packaged checkpoint completed the schedule,
    the wall-clock time over its segments (resumes) and its seed. Runs do not record the
    machine they ran on, so `machine` is None."""
    facts = train_facts(run_dir)
    spec = json.loads((package_dir / "config.json").read_text())
    step = int(spec.get("meta", {}).get("step", facts["steps"]))
    return {"run": run_dir.name, "checkpoint_step": step, "steps_logged": facts["steps"],
            "planned_steps": facts["planned_steps"],
            "completed": step >= facts["planned_steps"],
            "wall_minutes": round(facts["minutes"], 1), "segments": facts["segments"],
            "seed": facts["cfg"].get("seed"), "machine": None}


def record(run_dirs: list[Path], out: Path, assets: Path = ASSETS) -> dict:
    """docs/quality/training_runs.json: `run_record` of each run (keyed by the bundled
    model named like the run dir), with the command and commit that wrote it. Runs already
    recorded there and not given are kept."""
    import datetime as dt
    import shlex

    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import git_commit

    old = json.loads(out.read_text()) if out.is_file() else {}
    runs = dict(old.get("runs", {}))
    for run_dir in run_dirs:
        runs[run_dir.name] = run_record(run_dir, assets / run_dir.name)
    report = {"command": shlex.join(["python", *sys.argv]), **git_commit(),
              "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "runs": dict(sorted(runs.items()))}
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def export_run(run_dir: Path, dest: Path) -> None:
    """The run's EMA networks (latest checkpoint) into a package folder: config.json and
    model.safetensors (the card and metrics.json are written beside them afterwards)."""
    from polychrome.training.export import export_model

    with tempfile.TemporaryDirectory() as t:
        model_dir = export_model(run_dir, Path(t) / "model", which="latest")
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy2(model_dir / f, dest / f)
    size = sum(p.stat().st_size for p in dest.iterdir()) / 1e6
    print(f"exported {run_dir} to {dest} ({size:.1f} MB)")


def _baseline(model_dir: Path, tmp: Path) -> Path:
    """The same architecture at initialisation (step 0), for a before/after comparison."""
    import torch

    from polychrome.models import GANModel, get_model_class

    trained = GANModel.from_pretrained(model_dir)
    torch.manual_seed(1)  # the recipe's seed
    klass = get_model_class(trained.name)
    init = klass(trained.config)
    init.meta = dict(trained.meta, step=0)
    return init.eval().save_pretrained(tmp / "init", modules=trained.loaded_modules)


def _card(name: str, spec: dict, metrics: dict, run_cmd: str) -> str:
    """The card with empty figures blocks (run record, metrics, limitations): the caller
    fills them with scripts/render_docs.py, from training_runs.json and metrics.json."""
    from render_docs import SEED_REPORTS, empty_block  # this folder (scripts)

    meta = spec.get("meta", {})
    limits = ["## Limitations", "", empty_block("limits"), ""] if _limitations(metrics) else []
    if any(m == name for m, _ in SEED_REPORTS.values()):  # benchmarks/seed_diversity.py's
        limits += ["## Seed diversity", "", empty_block("seed-diversity"), ""]
    lines = [f"# {name}", "",
             f"- architecture: `{spec['model']}` ({spec['family']})",
             f"- styles: {', '.join(meta.get('styles', []))}",
             f"- resolution: {spec['config']['resolution']} px",
             f"- dataset: {meta.get('dataset')} (train split; held-out emoji never seen)",
             empty_block("run"),
             "", "## Recipe", "", "```", run_cmd,
             f"python scripts/train_defaults.py package RUNS/{name}", "```", "",
             "## Measured metrics", "",
             "Offline evaluator (a compact network Polychrome trains on this dataset); these "
             "numbers compare across Polychrome runs on the same dataset version, not with "
             "papers (only the `inception` extractor does).", "",
             empty_block("metrics"), "", *limits, "## Credits", "", CREDITS, ""]
    return "\n".join(lines)


def _limitations(metrics: dict) -> list[str]:
    """What the measured numbers say the model cannot do yet (read off, not written by hand)."""
    out = []
    if "paired_l1" in metrics:
        ratio = metrics["paired_l1"] / metrics["identity_l1"]
        if ratio >= 1.0:
            out.append(
                f"- Paired L1 on held-out emoji ({metrics['paired_l1']:.3f}) is not below the "
                f"identity baseline ({metrics['identity_l1']:.3f}): the translator renders the "
                f"target style (style accuracy {metrics['style_accuracy']:.0%}) but does not "
                "keep the source picture's content.")
        elif ratio > 0.75:
            out.append(
                f"- Paired L1 on held-out emoji is {1 - ratio:.0%} below the identity baseline "
                f"({metrics['paired_l1']:.3f} vs {metrics['identity_l1']:.3f}), short of the "
                "25 % Polychrome aims for: the translator keeps the source's layout and renders "
                f"each style (style accuracy {metrics['style_accuracy']:.0%}), but its colours "
                "and line work still differ from the real drawings in the target style almost "
                "as much as the source does.")
    return ["## Limitations", "", *out, ""] if out else []


def fill_card(run_dir: Path, dest: Path) -> None:
    """Record the run in docs/quality/training_runs.json (bundled models only) and render the
    figures blocks of dest/card.md from the committed outputs (scripts/render_docs.py)."""
    import render_docs  # this folder (scripts)

    if dest.resolve().parent == ASSETS.resolve():
        record([run_dir], QUALITY / "training_runs.json")
    render_docs.write([dest / "card.md"])


def package(run_dirs: list[Path], out_root: Path, *, eval_n: int,
            recipes: dict[str, str] | None = None) -> None:
    from polychrome.metrics.api import evaluate_model
    from polychrome.training.export import export_model

    for run_dir in run_dirs:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        name = run_dir.name
        with tempfile.TemporaryDirectory() as t:
            tmp = Path(t)
            model_dir = export_model(run_dir, tmp / "model", which="latest")
            spec = json.loads((model_dir / "config.json").read_text())
            t0 = time.time()
            if spec["family"] == "translation":
                res = evaluate_model(str(model_dir), record=False)
                metrics = {"extractor": res["extractor"], "split": "heldout",
                           **{k: v for k, v in res["translation"].items()}}
            else:
                res = evaluate_model(str(model_dir), metrics=("fid", "kid", "pr"), n=eval_n,
                                     record=False)
                init = evaluate_model(str(_baseline(model_dir, tmp)), metrics=("fid", "kid"),
                                      n=eval_n, record=False)
                metrics = {"extractor": res["extractor"], "n": eval_n, **res["metrics"],
                           "at_initialisation": init["metrics"]}
            print(f"{name}: measured in {time.time() - t0:.0f} s: {json.dumps(metrics)}")
            dest = out_root / name
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for f in ("config.json", "model.safetensors"):
                shutil.copy2(model_dir / f, dest / f)
            (dest / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
            run_cmd = (recipes or {}).get(name) or (
                f"polychrome train {spec['model']} --dataset emoji --config "
                f"scripts/defaults/{name}.yaml --steps {cfg['steps']} "
                f"--resolution {spec['config']['resolution']} --seed {cfg['seed']} "
                f"--run-dir RUNS/{name} --name {name}")
            (dest / "card.md").write_text(_card(name, spec, metrics, run_cmd))
            fill_card(run_dir, dest)
            size = sum(p.stat().st_size for p in dest.iterdir()) / 1e6
            print(f"{name}: wrote {dest} ({size:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("package", help="export, measure and write run dirs into the assets")
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=ASSETS)
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=COMMANDS",
                   help="the commands that made run NAME, for its card, when they were not "
                        "the single `polychrome train` the run's config implies (repeatable; "
                        "separate commands with ' && ')")
    r = sub.add_parser("record", help="the runs' facts for the docs (training_runs.json)")
    r.add_argument("run_dirs", nargs="+", type=Path)
    r.add_argument("--json", type=Path, default=QUALITY / "training_runs.json")
    args = ap.parse_args(argv)
    if args.cmd == "package":
        recipes = {}
        for item in args.recipe:
            name, sep, cmds = item.partition("=")
            if not sep or not cmds.strip():
                ap.error(f"--recipe wants NAME=COMMANDS, got {item!r}")
            recipes[name] = "\n".join(c.strip() for c in cmds.split(" && "))
        package(args.run_dirs, args.out, eval_n=args.eval_n, recipes=recipes)
    elif args.cmd == "record":
        record(args.run_dirs, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
