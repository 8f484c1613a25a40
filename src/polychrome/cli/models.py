"""`polychrome models ...`: list, show, register and remove trained models."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from ..errors import NotFound
from .common import echo, emit_json, json_option
from .main import app


@app.group("models")
def models_group() -> None:
    """Trained models: immutable versions under POLYCHROME_HOME/models/<name>/<version>/.

    A model is named NAME (latest version), NAME:VERSION, or by the path of a model
    directory (use ./dir for a directory whose name is also a registered name).
    """


# The figures `models list` shows, in this order (--json has all of them): key, label,
# format. A figure measured for several methods ({"GAN": .., "identity": ..}) shows ours.
MAIN_METRICS = (
    ("fid", "FID", ".3g"), ("kid_mean", "KID", ".2g"), ("precision", "precision", ".2f"),
    ("recall", "recall", ".2f"), ("style_accuracy", "style accuracy", ".2f"),
    ("paired_l1", "paired L1", ".3g"), ("ssim_luma", "luma SSIM", ".2f"),
    ("diversity_l1", "diversity", ".2g"),
)
MAX_MAIN = 5
PER_STYLE = "_per_style"  # a metric named <name>_per_style maps each style to a figure
OURS = ("GAN", "ours")
LABELS = {"fid": "FID", "kid": "KID"}


def _number(value: object) -> float | None:
    if isinstance(value, dict):
        value = next((value[k] for k in OURS if k in value), None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def main_metrics(metrics: dict) -> str:
    """A model's main figures on one short line: "FID 3.46, KID 0.048, precision 0.74"."""
    parts = []
    for key, label, fmt in MAIN_METRICS:
        value = _number(metrics.get(key))
        if value is not None:
            parts.append(f"{label} {value:{fmt}}")
    figures = metrics.get("figures")
    if isinstance(figures, dict):  # restoration: dB gained over the classical baseline
        gains = {k: v.get("gain_db") for k, v in figures.items() if isinstance(v, dict)}
        gains = {k: v for k, v in gains.items() if _number(v) is not None}
        if _number(figures.get("gain_db")) is not None:
            gains[""] = figures["gain_db"]
        parts += [f"{k + ' ' if k else ''}gain {v:+.2f} dB" for k, v in sorted(gains.items())]
    goals = metrics.get("goals")
    if isinstance(goals, dict) and goals:
        met = sum(1 for g in goals.values() if isinstance(g, dict) and g.get("met"))
        parts.append(f"goals met {met}/{len(goals)}")
    return ", ".join(parts[:MAX_MAIN]) or "-"


def per_style_metrics(metrics: dict, styles: list[str]) -> tuple[list[str], list[list[str]]]:
    """(metric labels, one row per style) of the <name>_per_style figures; ([], []) if none."""
    keys = [k for k, v in sorted(metrics.items())
            if k.endswith(PER_STYLE) and isinstance(v, dict) and v]
    if not keys:
        return [], []
    names = list(styles) + sorted({s for k in keys for s in metrics[k]} - set(styles))
    rows = []
    for style in names:
        cells = [_number(metrics[k].get(style)) for k in keys]
        if any(c is not None for c in cells):
            rows.append([style, *("-" if c is None else f"{c:.3g}" for c in cells)])
    labels = [LABELS.get(k[:-len(PER_STYLE)], k[:-len(PER_STYLE)].replace("_", " "))
              for k in keys]
    return labels, rows


def format_table(header: list[str], rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


@models_group.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List registered models (latest version of each) and their main metrics; figures
    measured per style follow in a table per model. --json has every figure."""
    from ..persistence.models import list_models_registered

    models = list_models_registered()
    if as_json:
        emit_json({"models": models})
        return
    if not models:
        echo("no models registered yet (train one with `polychrome train`)")
        return
    rows = [[m["name"], f"v{m['latest_version']}" + (f" ({len(m['versions'])})"
                                                     if len(m["versions"]) > 1 else ""),
             m["arch"], str(len(m["styles"])), main_metrics(m["metrics"])]
            for m in models]
    for line in format_table(["name", "version", "arch", "styles", "main metrics"], rows):
        echo(line)
    for m in models:
        labels, style_rows = per_style_metrics(m["metrics"], m["styles"])
        if style_rows:
            echo()
            echo(f"{m['name']} v{m['latest_version']}, per style:")
            for line in format_table(["style", *labels], style_rows, indent="  "):
                echo(line)


@models_group.command("show")
@click.argument("name")
@json_option
def show_cmd(name: str, as_json: bool) -> None:
    """Show a model's versions and card (NAME or NAME:VERSION)."""
    from ..persistence.models import show_model

    info = show_model(name)
    if as_json:
        emit_json(info)
        return
    echo(info["card"].rstrip())
    echo()
    echo("versions: " + ", ".join(
        f"v{v['version']} ({v['created'][:19]}, {v['path']})" for v in info["versions"]))


@models_group.command("register")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name ([A-Za-z0-9][A-Za-z0-9._-]{0,63}).")
@click.option("--which", type=click.Choice(["latest", "best"]), default="latest",
              show_default=True, help="Checkpoint of the run to export.")
@json_option
def register_cmd(run_dir: Path, name: str, which: str, as_json: bool) -> None:
    """Export a training run's EMA generator and register it as a new version of NAME."""
    from ..persistence.models import add_model_version, validate_model_name
    from ..settings import get_settings

    validate_model_name(name)
    if not run_dir.is_dir():
        raise NotFound(f"run directory {run_dir} does not exist")
    try:
        from ..training.export import export_model
    except ImportError:  # pragma: no cover - the training package ships with polychrome
        raise NotFound("the training engine is not installed in this build") from None
    settings = get_settings()
    settings.ensure_dirs()
    scratch = Path(tempfile.mkdtemp(prefix="export.", dir=settings.tmp_dir))
    try:
        model_dir = export_model(run_dir, scratch / "model", which=which)
        info = add_model_version(Path(model_dir), name, source_run=str(run_dir.resolve()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        emit_json(info)
    else:
        echo(f"registered {info['name']} version {info['version']} ({info['arch']}) at "
             f"{info['path']}")


@models_group.command("remove")
@click.argument("name")
@click.option("--version", type=int, default=None, help="Only this version (default: all).")
@json_option
def remove_cmd(name: str, version: int | None, as_json: bool) -> None:
    """Remove a model's files and index entries (one version or all)."""
    from ..persistence.models import remove_model

    removed = remove_model(name, version)
    if as_json:
        emit_json({"name": name, "removed_versions": removed})
    else:
        echo(f"removed {name} version(s) {', '.join(str(v) for v in removed)}")
