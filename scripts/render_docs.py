#!/usr/bin/env python3
"""The figures README.md and the bundled model cards quote, rendered from committed outputs.

    python scripts/render_docs.py            # rewrite every figures block in place
    python scripts/render_docs.py --check    # exit 1 (and name the blocks) when a committed
                                             # block differs from what would be rendered

A block is the text between `<!-- NAME-figures: rendered from SOURCES -->` and
`<!-- /NAME-figures -->`; everything outside the blocks is prose this script never
touches, and prose outside them quotes no measured figure. The sources are committed
files only: the benchmarks' JSON under docs/quality/ (each with its command, commit and
machine), the bundled models' config.json / metrics.json, docs/quality/training_runs.json
(the runs behind the bundled models, `scripts/train_defaults.py record`) and, for two
translation runs whose JSON was not kept, the tables `benchmarks/translation_quality.py`
printed into docs/quality/translation_quality*.md. Each benchmark that owns a README block
keeps its renderer (`readme_table`); this script calls it, so there is one way to render
each block. tests/test_docs_consistency.py runs `--check`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
QUALITY = REPO / "docs" / "quality"
ASSETS = REPO / "src" / "polychrome" / "assets" / "models"
README = REPO / "README.md"
for _p in (REPO / "benchmarks", REPO / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def _script(folder: str, name: str) -> Any:
    """A benchmark's or script's module, loaded from its file (a module of the same name
    elsewhere, e.g. a test package called `restoration`, is never taken for it)."""
    import importlib.util

    key = f"_polychrome_{folder}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


class DocsError(Exception):
    """A block's markers or sources are missing or inconsistent."""


# -- sources ------------------------------------------------------------------------------------
def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DocsError(f"{_rel(path)} is missing") from None


def quality(name: str) -> dict[str, Any]:
    return _json(QUALITY / name)


def model_config(name: str) -> dict[str, Any]:
    return _json(ASSETS / name / "config.json")


def model_metrics(name: str) -> dict[str, Any]:
    return _json(ASSETS / name / "metrics.json")


def run_record(name: str) -> dict[str, Any] | None:
    """The bundled model's run in docs/quality/training_runs.json, or None when its run's
    record was not kept; a record whose step is not the packaged one is an error."""
    rec = quality("training_runs.json")["runs"].get(name)
    step = model_config(name).get("meta", {}).get("step")
    if rec is not None and rec["checkpoint_step"] != step:
        raise DocsError(f"training_runs.json records step {rec['checkpoint_step']} for {name}, "
                        f"its config.json step {step}: record the run again")
    return rec


_TQ_HEADER = re.compile(
    r"stargan on (?P<dataset>\S+) \((?P<styles>\d+) styles, (?P<px>\d+) px\): (?P<steps>\d+) "
    r"of (?P<planned>\d+) steps in (?P<cpu>[\d.]+) CPU-min / (?P<wall>[\d.]+) wall-min, "
    r"(?P<threads>\d+) threads; held-out split, (?P<pairs>\d+) pairs, extractor (?P<ext>\S+)")


def translation_md(name: str) -> dict[str, Any]:
    """The header facts and table rows `benchmarks/translation_quality.py` printed into
    docs/quality/NAME (the metric column -> [translated, identity, target])."""
    text = (QUALITY / name).read_text()
    m = _TQ_HEADER.match(text)
    if m is None:
        raise DocsError(f"docs/quality/{name}: its first line is not translation_quality.py's")
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    rows = {cells[0]: cells[1:] for ln in table[2:]
            for cells in [[c.strip() for c in ln.strip("|").split("|")]]}
    return {**m.groupdict(), "table": "\n".join(table), "rows": rows, "file": name}


# -- small formatting helpers --------------------------------------------------------------------
def _n(v: float) -> str:
    """1234 -> '1,234'."""
    return f"{int(v):,}"


def _pct(v: float, digits: int = 0) -> str:
    return f"{v * 100:.{digits}f} %"


def _value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v)
    return str(v).replace("|", "\\|")


def flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics as (dotted key, value), keys sorted."""
    out: list[tuple[str, Any]] = []
    for k in sorted(d):
        v = d[k]
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _commit(report: dict[str, Any]) -> str:
    return str(report.get("commit") or "not recorded")[:10]


def _machine(report: dict[str, Any]) -> str:
    m = report.get("machine") or {}
    return (f"{m.get('cores')} cores, {m.get('cpu')}, {m.get('threads')} torch thread(s), "
            f"load average {m.get('load_average_1m')} at the start")


# -- card blocks ---------------------------------------------------------------------------------
def card_run(name: str) -> list[str]:
    """The checkpoint and its run, from the run's record (or what is known without it)."""
    rec = run_record(name)
    step = model_config(name).get("meta", {}).get("step")
    if rec is None:
        return [f"- checkpoint: step {step} (EMA weights; `config.json`). The run's own record "
                "(planned steps, whether it completed, training time, machine) was not kept, "
                "so this card states none of them."]
    done = ("it completed its schedule" if rec["completed"] else
            f"stopped before the end of its schedule (last logged step {rec['steps_logged']})")
    seg = "one segment" if rec["segments"] == 1 else f"{rec['segments']} segments (resumed)"
    machine = rec.get("machine") or "not recorded by the run"
    return [f"- checkpoint: step {rec['checkpoint_step']} of a {rec['planned_steps']}-step "
            f"schedule (EMA weights): {done}",
            f"- training: {rec['wall_minutes']:.0f} minutes of wall clock in {seg}, seed "
            f"{rec['seed']}; machine: {machine} (from the run's metrics.jsonl and config.yaml: "
            "docs/quality/training_runs.json)"]


INSTRUMENT_KEYS = ("evaluator_accuracy", "fid_floor", "fid_ceiling")  # `polychrome eval`'s
UNCHECKED = ("measured before `polychrome eval` checked its instrument: no evaluator accuracy, "
             "FID floor or ceiling was recorded with them")


def instrument_recorded(metrics: dict[str, Any]) -> bool:
    """Whether the metrics carry the evaluator's own quality (accuracy, FID floor, ceiling)."""
    return any(k.rsplit(".", 1)[-1] in INSTRUMENT_KEYS for k, _ in flatten(metrics))


def card_metrics(name: str) -> list[str]:
    """Every key metrics.json holds, as a table (whatever `polychrome eval` recorded), and
    whether the instrument's quality is among them."""
    metrics = model_metrics(name)
    rows = flatten(metrics)
    if not rows:
        return ["No metrics measured yet."]
    lines = ["| metric | value |", "|---|---|", *(f"| {k} | {_value(v)} |" for k, v in rows)]
    if not instrument_recorded(metrics):
        lines += ["", f"These figures were {UNCHECKED}."]
    return lines


def _card_script(name: str) -> Any:
    """The script that writes this bundled model's card (its family's recipe)."""
    spec = model_config(name)
    if spec.get("family") == "restoration":
        return _script("scripts", "train_restoration")
    if spec.get("meta", {}).get("fit") == "crops":
        return _script("scripts", "train_photo_styles")
    return _script("scripts", "train_defaults")


def card_measured(name: str) -> list[str]:
    """The measured figures of a restoration or photo-styles card (its script's renderer)."""
    return _card_script(name).measured_lines(ASSETS / name)


def card_limits(name: str) -> list[str]:
    """What the figures say the model does not do (its script's renderer)."""
    script = _card_script(name)
    if hasattr(script, "limit_lines"):
        return script.limit_lines(ASSETS / name)
    lines = script._limitations(model_metrics(name))
    return [ln for ln in lines if ln.startswith("- ")] or ["- None read off the metrics."]


def seed_sentence(report: dict[str, Any], what: str, source: str) -> str:
    """What seed_diversity.py measured, and what it means for the page's variations."""
    o = report["overall"]
    shapes = report.get("output_shapes") or []
    at = (f", outputs compared at {shapes[0][1]} x {shapes[0][0]} px" if len(shapes) == 1
          else "")
    verdict = ("less than half as much as a new style does: the variations look alike"
               if o["ratio_l1"] < 0.5 else "more than half as much as a new style does")
    dataset = str(report["dataset"]).removesuffix(" (heldout)")
    return (f"on {report['n_pictures']} held-out {what} of `{dataset}`{at}, the page's "
            f"{len(report['seeds'])} variations (seeds {report['seeds'][0]}-{report['seeds'][-1]}) "
            f"of one style differ by a mean pixel L1 of {o['seed_l1']:.3f} (0..1), against "
            f"{o['style_l1']:.3f} between its {len(report['styles'])} styles at one seed: "
            f"{o['ratio_l1']:.2f} x; in 1 - SSIM of the luma {o['seed_dssim']:.3f} against "
            f"{o['style_dssim']:.3f}: {o['ratio_dssim']:.2f} x (`benchmarks/seed_diversity.py`, "
            f"`docs/quality/{source}`, commit {_commit(report)}). So in pixels a new seed changes the picture {verdict}.")


SEED_REPORTS = {  # file under docs/quality/ -> (model, what its pictures are)
    "seed_diversity.json": ("emoji-stargan", "emoji"),
    "seed_diversity_emoji_other.json": ("emoji-stargan", "pictures (not emoji)"),
    "seed_diversity_photo.json": ("photo-styles", "pictures"),
}


def seed_lines(model: str) -> list[str]:
    """One paragraph per committed seed_diversity.py report of `model`."""
    out: list[str] = []
    for name, (m, what) in SEED_REPORTS.items():
        if m == model and (QUALITY / name).is_file():
            text = seed_sentence(quality(name), what, name)
            out += ["", text[0].upper() + text[1:]]
    if not out:
        raise DocsError(f"no seed_diversity.py report of {model} in docs/quality/")
    return out[1:]


# -- README blocks -------------------------------------------------------------------------------
def readme_restoration() -> str:
    return _script("benchmarks", "restoration").readme_table(quality("restoration.json"))


def readme_load() -> str:
    return _script("benchmarks", "load").readme_table(quality("load.json"))


def readme_compression() -> str:
    return _script("benchmarks", "compression").readme_table(quality("compression.json"))


def readme_peer_stargan() -> str:
    return _script("benchmarks", "peer_stargan").readme_table(quality("peer_stargan.json"))


def readme_train_throughput() -> str:
    return _script("benchmarks", "train_throughput").readme_table(
        quality("train_throughput.json"))


def readme_scale_out() -> str:
    return _script("benchmarks", "scale_out").readme_table(quality("scale_out.json"))


def readme_default_models() -> list[str]:
    dirs = sorted(d for d in ASSETS.iterdir() if (d / "config.json").is_file())
    size = sum(p.stat().st_size for d in dirs for p in d.iterdir() if p.is_file()) / 1e6
    sg, st = model_config("emoji-stylegan"), model_config("emoji-stargan")
    unpaired = translation_md("translation_quality_unpaired.md")
    m, t = model_metrics("emoji-stylegan"), model_metrics("emoji-stargan")
    unchecked = [n for n, x in (("emoji-stylegan", m), ("emoji-stargan", t))
                 if not instrument_recorded(x)]
    stylegan = []
    if "fid" in m:
        init = (m.get("at_initialisation") or {}).get("fid")
        stylegan.append(f"FID {m['fid']:.2f}" + (f" ({init:.2f} at initialisation)"
                                                if init is not None else ""))
    if "kid_mean" in m:
        stylegan.append(f"KID {m['kid_mean']:.3f}")
    if "precision" in m and "recall" in m:
        stylegan.append(f"precision {m['precision']:.2f}, recall {m['recall']:.2f}")
    if "fid_floor" in m and "fid_ceiling" in m:
        stylegan[0] += (f" between its floor {m['fid_floor']:.2f} (real vs real) and ceiling "
                        f"{m['fid_ceiling']:.1f} (real vs noise)")
    if "sample_accuracy" in m:
        per = m.get("sample_accuracy_per_style") or {}
        worst = min(per, key=per.get) if per else None
        stylegan.append(f"samples recognised as their style {_pct(m['sample_accuracy'])}" + (
            f" (worst: {worst} {_pct(per[worst])})" if worst else ""))
    if "evaluator_accuracy" in m:
        stylegan.append(f"evaluator held-out accuracy {_pct(m['evaluator_accuracy'])}")
    stylegan_text = ", ".join(stylegan) + (f" (n = {_n(m['n'])})" if "n" in m else "")
    stargan = []
    if "style_accuracy" in t:
        stargan.append(f"style accuracy {_pct(t['style_accuracy'])}" + (
            f" ({_pct(t['style_accuracy_ref'])} reference-guided)"
            if "style_accuracy_ref" in t else ""))
    if "paired_l1" in t:
        stargan.append(f"paired L1 {t['paired_l1']:.3f} vs identity {t['identity_l1']:.3f}")
    if "paired_feat" in t:
        stargan.append(f"feature distance {t['paired_feat']:.2f} vs identity "
                       f"{t['identity_feat']:.2f}")
    if "diversity_l1" in t:
        stargan.append(f"diversity {t['diversity_l1']:.3f}")
    if "evaluator_accuracy" in t:
        stargan.append(f"evaluator held-out accuracy {_pct(t['evaluator_accuracy'])}")
    return [
        f"{len(dirs)} models ship inside the package (`polychrome/assets/models/`, "
        f"{size:.0f} MB in all) and are registered on first use of any `POLYCHROME_HOME`: "
        "`photo-styles` (below, \"Photos at their own size\"), the restoration models "
        "`photo-sr`, `photo-inpaint`, `photo-colorize` and `emoji-sr` (below, "
        "\"Restoration\"), and two emoji models, trained from scratch by "
        "`scripts/train_defaults.py` on the emoji styles set (32 px; five styles: Noto, "
        "Twemoji, OpenMoji colour, OpenMoji line, Fluent flat); the fixed held-out emoji were "
        "never trained on. `emoji-stylegan` is the checkpoint of step "
        f"{_n(sg['meta']['step'])}, `emoji-stargan` of step {_n(st['meta']['step'])} (their "
        "`config.json`); the runs' own records (planned steps, time, machine) were not kept. "
        "`emoji-stargan`'s recipe (its card) is the unpaired recipe's budget run of "
        f"\"Measured quality\" below ({_n(unpaired['steps'])} of {_n(unpaired['planned'])} "
        f"steps in {unpaired['cpu']} CPU-minutes, `docs/quality/{unpaired['file']}`), "
        f"continued to step {_n(st['meta']['step'])}.",
        "",
        "| model | what it does | measured (offline evaluator, `polychrome eval`; its "
        "`metrics.json`) |",
        "| --- | --- | --- |",
        "| `emoji-stylegan` | draws new emoji-like images in any of the 5 styles; blends, "
        f"per-layer mixing, truncation | {stylegan_text} |",
        "| `emoji-stargan` | restyles a picture into a style by name or by reference; blends, "
        f"strength, live switching | held-out translation: {', '.join(stargan)} |",
        *(["", f"The figures of {' and '.join(f'`{n}`' for n in unchecked)} were {UNCHECKED}."]
          if unchecked else []),
    ]


def readme_translator_limits() -> list[str]:
    t = model_metrics("emoji-stargan")
    paired = translation_md("translation_quality.md")
    unpaired = translation_md("translation_quality_unpaired.md")
    ratio = t["paired_l1"] / t["identity_l1"]
    p_ratio = float(paired["rows"]["paired L1 (pixels, 0..1)"][2].rsplit(" ", 2)[-2])
    div_p = float(paired["rows"]["diversity (L1 between seeds)"][0])
    div_u = float(unpaired["rows"]["diversity (L1 between seeds)"][0])
    return [
        "Honest limits: the translator keeps the source picture's layout and redraws it in "
        "each style (see the restyle grid below), but its colours and line work are still far "
        "from the real drawings of the same emoji in the target style: paired L1 is "
        f"{_pct(1 - ratio)} below the identity baseline, where Polychrome aims for 25 %. The "
        f"paired recipe (`emoji-stargan-paired.yaml`) got to {_pct(1 - p_ratio)} below in one "
        f"run of {paired['cpu']} CPU-minutes (`docs/quality/{paired['file']}`), with "
        f"{div_p / div_u:.2f} x the diversity between seeds of the unpaired recipe's run "
        "(see \"Measured quality\")."]


def readme_seed_diversity() -> list[str]:
    lines = ["How different the page's restyle variations are (seed diversity, measured by "
             "`benchmarks/seed_diversity.py`):"]
    for model in ("emoji-stargan", "photo-styles"):
        for para in seed_lines(model):
            if para:
                lines += ["", f"- `{model}`: {para[0].lower() + para[1:]}"]
    return lines


def readme_style_switch() -> list[str]:
    r = quality("style_switch.json")
    run = r["runs"][0]
    p = run["p50_s"]
    return [f"Restyling a {r['input_size']} x {r['input_size']} PNG with `{Path(run['model']).name}` "
            f"takes {p['full'] * 1e3:.1f} ms p50 (decode, encode, decode in a style); a style "
            f"switch on the cached content {p['switch'] * 1e3:.1f} ms "
            f"({run['ratio_p50']:.1f} x faster), p50 of {r['reps']} "
            f"(`benchmarks/style_switch.py`, `docs/quality/style_switch.json`: commit "
            f"{_commit(r)}; {_machine(r)})."]


def readme_contract() -> list[str]:
    r = quality("schemathesis.json")
    cases = r["summary"]["test_cases"]
    return [f"The OpenAPI document is the contract, checked by schemathesis with every check "
            f"for {r['seconds'] / 60:.0f} minutes against `polychrome serve` with a job worker "
            f"and the {len(r['server']['models'])} bundled models: {cases['generated']:,} "
            f"requests, {cases['unique_failures']} failures, {len(r['summary']['errors'])} "
            f"errors ({r['dropped_by_filter_failure']['total']:,} refusals that no schema can "
            f"state, such as an upload that is not a picture, dropped by the project's hooks; "
            f"`benchmarks/contract.py`, `docs/quality/schemathesis.json`: commit "
            f"{_commit(r)}; {_machine(r)})."]


def readme_photo_quality() -> list[str]:
    q = quality("photo_quality.json")
    rec = run_record("photo-styles")
    o = q["summary"]["overall"]
    gan, ct, ident = o["GAN"], o["colour transfer"], o["identity"]
    cmd = q["command"].removeprefix("python ")
    run = (f"step {_n(rec['checkpoint_step'])}, {rec['wall_minutes']:.0f} min of training"
           if rec else "its run not recorded")
    drawn = [(s, r) for s, r in q["summary"]["per_target"].items()
             if q["real"].get(s, {}).get("accuracy", 0) > 0]
    per = ", ".join(f"{s} {_pct(r['GAN']['style_accuracy'])} vs "
                    f"{_pct(r['colour transfer']['style_accuracy'])}" for s, r in drawn)
    unseen = [s for s, r in q["real"].items() if r.get("accuracy") == 0]
    ev = q["evaluator"].get("val_style_accuracy")
    status = "" if rec is None or rec["completed"] else (
        f" The run was stopped at step {_n(rec['checkpoint_step'])} of a "
        f"{_n(rec['planned_steps'])}-step schedule.")
    return [
        f"Measured on {gan['n']} held-out (picture, target style) pairs by `{cmd}` "
        "(`docs/quality/photo_quality.json`, `.md`, grid `docs/quality/photo_styles_grid.png`; "
        f"commit {_commit(q)}):", "",
        "| method | style accuracy | SSIM of the luminance (content kept) |",
        "| --- | --- | --- |",
        f"| `photo-styles` ({run}) | {_pct(gan['style_accuracy'], 1)} | {gan['ssim']:.3f} |",
        "| colour transfer (Reinhard et al. 2001, Lab statistics of the target style) | "
        f"{_pct(ct['style_accuracy'], 1)} | {ct['ssim']:.3f} |",
        f"| identity | {_pct(ident['style_accuracy'], 1)} | {ident['ssim']:.3f} |", "",
        f"Honest limits: style accuracy {_pct(gan['style_accuracy'], 1)} for the GAN against "
        f"{_pct(ct['style_accuracy'], 1)} for colour transfer, while the GAN keeps more of "
        f"the picture (SSIM {gan['ssim']:.3f} vs {ct['ssim']:.3f}). Per drawn style (GAN vs "
        f"colour transfer): {per}. The instrument is coarse: the crop classifier recognises "
        f"held-out crops {_pct(ev)} of the time"
        + (f" and real held-out pictures of {', '.join(unseen)} 0 % of the time (so "
           "translations into them score 0 for every method)" if unseen else "")
        + "." + status]


def readme_native_size() -> list[str]:
    r = quality("native_size.json")
    rss = r["rss"]
    whole = [p for p in r["psnr"] if p["stats"] == "whole"]
    down = [p for p in r["psnr"] if p["stats"] == "downscaled"
            and p["stats_pixels"] == r["settings"]["tile_stats_max_pixels"]]
    lines = [f"Speed and memory, `benchmarks/native_size.py` with `{Path(r['model']).name}`, "
             f"style {r['style']} (`docs/quality/native_size.json`: commit {_commit(r)}; "
             f"{_machine(r)}):", "",
             "| picture | tiles | p50 decode + restyle + PNG | of which restyle |",
             "| --- | --- | --- | --- |"]
    for t in r["timing"]:
        lines.append(f"| {t['width']} x {t['height']} ({t['megapixels']:g} MP) | {t['tiles']} | "
                     f"{t['p50_s']:.2f} s | {t['restyle_p50_s']:.2f} s |")
    text = (f"Peak RSS restyling {rss['width']} x {rss['height']} in a fresh process: "
            f"{_n(rss['restyle_mib'])} MiB ({_n(rss['baseline_mib'])} MiB of it is importing "
            "PyTorch and loading the model).")
    if whole:
        w = whole[0]
        text += (f" Tiled vs whole at {w['width']} x {w['height']} (whole-picture statistics): "
                 f"PSNR {w['psnr_db']:.1f} dB")
    if down:
        d = down[0]
        text += (f"; above `tile_stats_max_pixels` ({d['stats_pixels'] / 2 ** 20:g} MP) the "
                 "statistics come from a downscaled copy and are approximate: "
                 f"{d['psnr_db']:.1f} dB at {d['width']} x {d['height']}")
    return [*lines, "", text + "."]


def readme_restoration_limits() -> list[str]:
    report = quality("restoration.json")
    tasks = report["tasks"]
    goals = [g for t in tasks.values() for g in t["goals"].values()]
    met = sum(bool(g["met"]) for g in goals)
    parts = []
    if "sr" in tasks:
        sr = tasks["sr"]
        parts.append("`photo-sr` gains " + ", ".join(
            f"{g['value']:+.2f} dB ({name.split()[0]}, goal {g['goal'].split()[-2]})"
            for name, g in sr["goals"].items()) + " over bicubic")
    if "inpaint" in tasks:
        s_ = tasks["inpaint"]["summary"]
        parts.append(f"`photo-inpaint` is {s_['gain_db']:+.2f} dB from the classical harmonic "
                     f"fill in holes of {_pct(s_['mask_fraction'])} of the picture on average "
                     "(it gives a blurred fill with blocky traces)")
    if "colorize" in tasks:
        s_ = tasks["colorize"]["summary"]
        m = s_["methods"]
        parts.append(f"`photo-colorize`'s a\\*b\\* error is {m['ours']['ab_error']:.2f}, "
                     f"against {m['mean chroma']['ab_error']:.2f} for mean chroma and "
                     f"{m['grey']['ab_error']:.2f} for leaving the picture grey, and its "
                     f"colours are faint (colourfulness {s_['colourfulness_ratio']:.2f} of the "
                     "real photos')")
    recs = {n: run_record(n) for n in ("photo-sr", "photo-inpaint", "photo-colorize")}
    sr = quality("emoji_sr.json")["tasks"]["sr"]
    gains = " and ".join(f"{blk['gain_db']:+.2f} dB ({k})" for k, blk in sr["summary"].items())
    runs = "; ".join(f"`{n}` {r['wall_minutes']:.0f} minutes of wall clock, step "
                     f"{_n(r['checkpoint_step'])} of {_n(r['planned_steps'])}"
                     for n, r in recs.items() if r is not None)
    return [f"Honest limits: {met} of the {len(goals)} quality goals above are met. "
            + "; ".join(parts) + ".", "",
            f"Training, from scratch on 28 photographs: {runs} (`docs/quality/training_runs."
            "json`; the model cards give each run). `emoji-sr`, trained the same way on the "
            f"emoji styles, gains {gains} over bicubic on {sr['n_photos']} held-out emoji "
            "(`docs/quality/emoji_sr.json`, grids in `docs/restoration/emoji/`)."]


def readme_translation() -> list[str]:
    p = translation_md("translation_quality.md")
    return [f"It ran {_n(p['steps'])} of its {_n(p['planned'])}-step schedule in {p['cpu']} "
            f"CPU-minutes ({p['wall']} wall, {p['threads']} thread(s)); {p['pairs']} held-out "
            f"pairs, extractor `{p['ext']}` (`docs/quality/{p['file']}`, the table the script "
            "printed; that run's JSON and machine were not kept):", "", p["table"]]


def readme_recipes() -> list[str]:
    recipes = [("unpaired: StarGAN v2 losses + skips + identity loss (`emoji-stargan.yaml`)",
                translation_md("translation_quality_unpaired.md")),
               ("paired (`emoji-stargan-paired.yaml`)", translation_md("translation_quality.md"))]
    lines = ["| recipe | steps | CPU-minutes | style accuracy | paired L1 / identity | diversity |",
             "|---|---|---|---|---|---|"]
    for label, r in recipes:
        ratio = r["rows"]["paired L1 (pixels, 0..1)"][2].rsplit(" ", 2)[-2]
        lines.append(f"| {label} | {_n(r['steps'])} of {_n(r['planned'])} | {r['cpu']} | "
                     f"{r['rows']['style accuracy (latent-guided)'][0]} | {ratio} x | "
                     f"{r['rows']['diversity (L1 between seeds)'][0]} |")
    (_, u), (_, p) = recipes
    div = float(p["rows"]["diversity (L1 between seeds)"][0]) / \
        float(u["rows"]["diversity (L1 between seeds)"][0])
    step = model_config("emoji-stargan")["meta"]["step"]
    return [*lines, "",
            "Each row is one run (files `docs/quality/translation_quality_unpaired.md` and "
            "`translation_quality.md`). Without ground truth the translator keeps the source's "
            "layout and renders each style, but its colours and line work differ from the real "
            "target drawings almost as much as the untranslated source does "
            f"({u['rows']['paired L1 (pixels, 0..1)'][2].rsplit(' ', 2)[-2]} x). Training on "
            "the drawings that share a file name brought it to "
            f"{p['rows']['paired L1 (pixels, 0..1)'][2].rsplit(' ', 2)[-2]} x (the aim: 0.75 "
            f"x), at a price: different seeds vary the result {div:.2f} x as much. The bundled "
            f"`emoji-stargan` keeps the unpaired recipe (continued to step {_n(step)}) for its "
            "diversity; use `emoji-stargan-paired.yaml` when closeness to real drawings "
            "matters more."]


# -- the blocks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    path: Path
    name: str
    sources: str
    render: Callable[[], list[str] | str]  # body lines, or the whole block (markers too)

    def begin(self) -> str:
        return f"<!-- {self.name}-figures: rendered from {self.sources} -->"

    def end(self) -> str:
        return f"<!-- /{self.name}-figures -->"

    def text(self) -> str:
        out = self.render()
        if isinstance(out, str):  # a benchmark's own readme_table: markers included
            return out
        return "\n".join([self.begin(), "", *out, "", self.end()])


def _seed_sources(model: str) -> str:
    return "docs/quality/" + ", ".join(n for n, (m, _) in SEED_REPORTS.items() if m == model)


# The blocks a card may hold (its script writes the markers): kind -> (sources, body).
CARD_BLOCKS: dict[str, tuple[Callable[[str], str], Callable[[str], list[str]]]] = {
    "run": (lambda name: "docs/quality/training_runs.json and config.json", card_run),
    "metrics": (lambda name: "metrics.json", card_metrics),
    "measured": (lambda name: "docs/quality/ (the JSON its metrics.json names)", card_measured),
    "limits": (lambda name: "metrics.json and docs/quality/", card_limits),
    "seed-diversity": (_seed_sources, seed_lines),
}


def blocks() -> list[Block]:
    q = "docs/quality/"
    out = [
        Block(README, "default-models", "the bundled models' config.json and metrics.json, "
              f"{q}translation_quality_unpaired.md", readme_default_models),
        Block(README, "translator-limits", f"emoji-stargan's metrics.json, {q}translation_"
              "quality.md and translation_quality_unpaired.md", readme_translator_limits),
        Block(README, "seed-diversity", f"{q}{', '.join(SEED_REPORTS)}",
              readme_seed_diversity),
        Block(README, "style-switch", f"{q}style_switch.json", readme_style_switch),
        Block(README, "photo-quality", f"{q}photo_quality.json and training_runs.json",
              readme_photo_quality),
        Block(README, "native-size", f"{q}native_size.json", readme_native_size),
        Block(README, "restoration", f"{q}restoration.json", readme_restoration),
        Block(README, "restoration-limits", f"{q}restoration.json, training_runs.json and "
              "emoji_sr.json", readme_restoration_limits),
        Block(README, "load", f"{q}load.json", readme_load),
        Block(README, "compression", f"{q}compression.json", readme_compression),
        Block(README, "peer-stargan", f"{q}peer_stargan.json", readme_peer_stargan),
        Block(README, "train-throughput", f"{q}train_throughput.json", readme_train_throughput),
        Block(README, "scale-out", f"{q}scale_out.json", readme_scale_out),
        Block(README, "contract", f"{q}schemathesis.json", readme_contract),
        Block(README, "translation", f"{q}translation_quality.md", readme_translation),
        Block(README, "recipes", f"{q}translation_quality.md and translation_quality_unpaired.md"
              ", emoji-stargan's config.json", readme_recipes),
    ]
    for d in sorted(ASSETS.iterdir()):
        card = d / "card.md"
        if not card.is_file():
            continue
        text = card.read_text()
        if "<!-- run-figures:" not in text:
            raise DocsError(f"{_rel(card)} has no run-figures block: the card must state its "
                            "run from the record (scripts/render_docs.py card blocks)")
        for kind, (sources, render) in CARD_BLOCKS.items():
            if f"<!-- {kind}-figures:" in text:
                out.append(Block(card, kind, sources(d.name),
                                 lambda render=render, name=d.name: render(name)))
    return out


def empty_block(name: str) -> str:
    """A block's markers with nothing between them, for a card script to fill by rendering."""
    return f"<!-- {name}-figures: rendered from (run scripts/render_docs.py) -->\n" \
           f"<!-- /{name}-figures -->"


def replace_block(text: str, block: Block, rendered: str) -> str:
    """`text` with `block`'s region (begin marker to end marker) replaced by `rendered`."""
    start = text.find(f"<!-- {block.name}-figures:")
    end = text.find(block.end())
    if start < 0 or end < start:
        raise DocsError(f"{_rel(block.path)} has no {block.name}-figures block "
                        "(its markers are missing)")
    return text[:start] + rendered + text[end + len(block.end()):]


def render_all(only: list[Block] | None = None) -> dict[Path, tuple[str, str, list[str]]]:
    """{file: (committed text, rendered text, names of the blocks that differ)}."""
    files: dict[Path, tuple[str, str, list[str]]] = {}
    for block in only or blocks():
        old, new, changed = files.get(block.path) or (block.path.read_text(),) * 2 + ([],)
        before = new
        new = replace_block(new, block, block.text())
        if new != before:
            changed.append(block.name)
        files[block.path] = (old, new, changed)
    return files


def write(paths: list[Path] | None = None) -> list[Path]:
    """Render the blocks of `paths` (default: every file) in place; returns those changed."""
    want = None if paths is None else {Path(p).resolve() for p in paths}
    only = [b for b in blocks() if want is None or b.path.resolve() in want]
    changed = []
    for p, (old, new, _) in render_all(only).items():
        if new != old:
            p.write_text(new)
            changed.append(p)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 when a committed block is not its rendering")
    args = ap.parse_args(argv)
    try:
        files = render_all()
    except DocsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stale = {p: changed for p, (_, _, changed) in files.items() if changed}
    if args.check:
        for p, changed in stale.items():
            print(f"{_rel(p)}: {', '.join(changed)} differ from their sources "
                  "(run python scripts/render_docs.py)", file=sys.stderr)
        return 1 if stale else 0
    for p in write():
        print(f"rendered {_rel(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
