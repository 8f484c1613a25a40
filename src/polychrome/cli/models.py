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


def _metrics_line(metrics: dict) -> str:
    parts = []
    for key, value in sorted(metrics.items()):
        if isinstance(value, dict) and "fid" in value:
            parts.append(f"fid {value['fid']:.4g} ({key})")
        elif isinstance(value, int | float):
            parts.append(f"{key} {value:.4g}")
    return "; ".join(parts) or "-"


@models_group.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List registered models (latest version of each)."""
    from ..persistence.models import list_models_registered

    models = list_models_registered()
    if as_json:
        emit_json({"models": models})
        return
    if not models:
        echo("no models registered yet (train one with `polychrome train`)")
        return
    for m in models:
        echo(f"{m['name']}  v{m['latest_version']} ({len(m['versions'])} version(s))  "
             f"{m['arch']}  styles: {', '.join(m['styles'])}  metrics: "
             f"{_metrics_line(m['metrics'])}")


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
