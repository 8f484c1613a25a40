"""Turn a run's checkpoint into a self-describing model directory (EMA weights)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..models import get_model_class
from ..settings import get_settings
from .checkpoint import find_checkpoint, load_checkpoint, load_module_tensors

log = logging.getLogger(__name__)


def export_model(run_dir: str | Path, out_dir: str | Path, *, which: str = "latest") -> Path:
    """Write the run's EMA inference networks as a model dir (config.json + model.safetensors).

    which: "latest" or "best" (lowest `best_metric`). meta carries "styles",
    "dataset" ("name:version"), "run" (run id), "step", "resolution", plus
    "metrics" of that checkpoint when it was evaluated.
    """
    ckpt = find_checkpoint(run_dir, which)
    tensors, state = load_checkpoint(ckpt)
    try:
        spec = state["model"]
        klass = get_model_class(spec["name"])
        model = klass(klass.config_class.from_dict(spec["config"]))
        modules = tuple(spec["inference_modules"])
    except KeyError as e:
        raise CheckpointError(f"{ckpt} lacks the model spec ({e})") from None
    for name in modules:
        load_module_tensors(getattr(model, name), f"ema.{name}", tensors)
    data = state.get("dataset", {})
    dataset = data.get("name")
    if dataset and data.get("version") is not None:
        dataset = f"{dataset}:{data['version']}"
    meta: dict[str, Any] = {
        "styles": list(data.get("domains", [])),
        "dataset": dataset,
        "run": state.get("run", {}).get("id", Path(run_dir).name),
        "step": int(state["step"]),
        "resolution": int(model.config.resolution),
        "fit": data.get("fit"),
    }
    if data.get("fit") == "crops":  # pictures at their own size: crop side and scale range
        meta["crop"] = int(model.config.resolution)
        meta["scale"] = list(data.get("scale") or [])
    if state.get("metrics"):
        meta["metrics"] = dict(state["metrics"])
    model.eval().save_pretrained(out_dir, modules=modules, meta=meta)
    log.info("exported %s (step %d, %s) to %s", spec["name"], meta["step"], which, out_dir)
    return Path(out_dir)


def register_run_model(run_dir: str | Path, name: str, *, which: str = "latest",
                       metrics: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Export the run's EMA model and add it to the model store under `name`.

    Returns add_model_version's record, or None (with a warning) when the model
    store is not available in this installation.
    """
    try:
        from ..persistence.models import add_model_version
    except ImportError:
        log.warning("model store not available: the trained model was not registered "
                    "(export it later with `polychrome models register %s`)", run_dir)
        return None
    settings = get_settings()
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="export-", dir=settings.tmp_dir))
    try:
        model_dir = export_model(run_dir, work / "model", which=which)
        if metrics is None:
            spec = json.loads((model_dir / "config.json").read_text())
            metrics = spec.get("meta", {}).get("metrics") or None
        return add_model_version(model_dir, name, source_run=str(run_dir), metrics=metrics)
    finally:
        shutil.rmtree(work, ignore_errors=True)
