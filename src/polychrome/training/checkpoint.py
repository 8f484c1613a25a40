"""Atomic checkpoints: one directory per step holding safetensors + JSON, no pickle.

Layout under runs/<id>/checkpoints/:
    step-000123/state.safetensors   every tensor (weights, EMA, optimiser moments, RNG states)
    step-000123/state.json          everything else (step, config, param groups, loader, ...)
    latest.json                     {"step", "dir"} pointer, replaced atomically
    best.json                       {"step", "dir", "metric", "value"} (lowest value wins)

A checkpoint is built in `step-000123.tmp-XXXX/`, both files fsynced, then
renamed into place; a directory without both files (a killed write) is never
loaded. So a kill -9 at any moment leaves the last complete checkpoint usable.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..utils.atomic import _fsync_dir, atomic_write_json

log = logging.getLogger(__name__)

TENSORS_NAME = "state.safetensors"
STATE_NAME = "state.json"
LATEST_NAME = "latest.json"
BEST_NAME = "best.json"
FORMAT = "polychrome-checkpoint"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"step-(\d+)")


def step_dirname(step: int) -> str:
    return f"step-{step:06d}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def is_complete(path: Path) -> bool:
    return (path / TENSORS_NAME).is_file() and (path / STATE_NAME).is_file()


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint dirs under `root`, oldest step first (tmp/partial ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.fullmatch(p.name)
        if m and p.is_dir() and is_complete(p):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _read_pointer(root: Path, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((root / name).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint: the `latest.json` pointer if valid, else a scan."""
    root = Path(root)
    ptr = _read_pointer(root, LATEST_NAME)
    if ptr and isinstance(ptr.get("dir"), str):
        p = root / ptr["dir"]
        if _STEP_DIR.fullmatch(p.name) and is_complete(p):
            newer = [c for c in list_checkpoints(root) if _step_of(c) > _step_of(p)]
            # A crash between the rename and the pointer update leaves a newer complete dir.
            return newer[-1] if newer else p
    found = list_checkpoints(root)
    return found[-1] if found else None


def best_checkpoint(root: str | Path) -> Path | None:
    root = Path(root)
    ptr = _read_pointer(root, BEST_NAME)
    if ptr and isinstance(ptr.get("dir"), str):
        p = root / ptr["dir"]
        if _STEP_DIR.fullmatch(p.name) and is_complete(p):
            return p
    return None


def best_record(root: str | Path) -> dict[str, Any] | None:
    """The `best.json` record ({"step","dir","metric","value"}) if its checkpoint exists."""
    root = Path(root)
    return _read_pointer(root, BEST_NAME) if best_checkpoint(root) else None


def _step_of(path: Path) -> int:
    m = _STEP_DIR.fullmatch(path.name)
    return int(m.group(1)) if m else -1


def save_checkpoint(root: str | Path, step: int, tensors: dict[str, torch.Tensor],
                    state: dict[str, Any], *, keep_last: int = 3,
                    metric: tuple[str, float] | None = None) -> Path:
    """Write checkpoint `step` atomically, update the pointers, prune old ones.

    tensors: any flat name -> tensor mapping (moved to CPU, made contiguous);
    state: JSON-serialisable dict. `metric` = (name, value) makes this checkpoint
    the best one if its value is the lowest seen (NaN never is).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_scratch(root)
    final = root / step_dirname(step)
    work = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=root))
    try:
        # clone: safetensors refuses tensors that share storage (e.g. tied or viewed weights)
        flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        save_file(flat, str(work / TENSORS_NAME), metadata={"format": FORMAT})
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step), **state}
        (work / STATE_NAME).write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=True))
        _fsync_file(work / TENSORS_NAME)
        _fsync_file(work / STATE_NAME)
        _fsync_dir(work)
        _replace_dir(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    atomic_write_json(root / LATEST_NAME, {"step": int(step), "dir": final.name})
    if metric is not None:
        _maybe_update_best(root, final, step, metric)
    prune_checkpoints(root, keep_last)
    return final


def _replace_dir(work: Path, final: Path) -> None:
    """Rename `work` to `final`; an existing `final` (an abandoned future) is swapped out."""
    old: Path | None = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(work, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _maybe_update_best(root: Path, ckpt: Path, step: int, metric: tuple[str, float]) -> None:
    name, value = metric
    if value is None or not math.isfinite(value):
        return
    current = best_record(root)
    if current is None or current.get("metric") != name or value < float(current["value"]):
        atomic_write_json(root / BEST_NAME,
                          {"step": int(step), "dir": ckpt.name, "metric": name, "value": value})


def _remove_scratch(root: Path) -> None:
    # Leftovers of writes that were killed; only rank 0 writes here, so none is in use.
    for p in root.glob("step-*.*-*"):
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)


def prune_checkpoints(root: str | Path, keep_last: int) -> list[Path]:
    """Delete complete checkpoints except the newest `keep_last` and the best one."""
    root = Path(root)
    found = list_checkpoints(root)
    keep = set(found[-max(1, keep_last):])
    best = best_checkpoint(root)
    if best is not None:
        keep.add(best)
    removed = []
    for p in found:
        if p not in keep:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of one checkpoint dir; CheckpointError if it is incomplete or invalid."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint "
                              f"(needs {TENSORS_NAME} and {STATE_NAME})")
    try:
        state = json.loads((path / STATE_NAME).read_text())
        tensors = load_file(str(path / TENSORS_NAME), device=str(device))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path / STATE_NAME} is not a polychrome checkpoint")
    found = state.get("format_version", 1)
    if isinstance(found, bool) or not isinstance(found, int) or not 1 <= found <= FORMAT_VERSION:
        raise CheckpointError(f"{path / STATE_NAME} has format_version {found!r}; this release "
                              f"reads up to {FORMAT_VERSION} (a newer Polychrome wrote it?)")
    return tensors, state


def find_checkpoint(run_dir: str | Path, which: str = "latest") -> Path:
    """The `latest` or `best` checkpoint of a run dir (or a checkpoint dir itself)."""
    run_dir = Path(run_dir)
    if is_complete(run_dir):
        return run_dir
    root = run_dir / "checkpoints"
    if which == "latest":
        found = latest_checkpoint(root)
    elif which == "best":
        found = best_checkpoint(root)
        if found is None:
            raise CheckpointError(f"{run_dir} has no best checkpoint (no evaluation ran); "
                                  "use latest")
    else:
        raise CheckpointError(f"which must be 'latest' or 'best', got {which!r}")
    if found is None:
        raise CheckpointError(f"{run_dir} has no complete checkpoint")
    return found


# -- optimiser state <-> (tensors, JSON) ------------------------------------------------
def optimizer_state(opt: torch.optim.Optimizer, prefix: str
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state_dict into safetensors-able tensors and JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, prefix: str,
                         tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    head = prefix + "."
    for name, val in tensors.items():
        if name.startswith(head):
            idx, key = name[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[key] = val
    for idx, extra in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimiser state {prefix!r} does not match the model: {e}") from None


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def load_module_tensors(module: torch.nn.Module, prefix: str,
                        tensors: dict[str, torch.Tensor]) -> None:
    head = prefix + "."
    sub = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
    try:
        module.load_state_dict(sub, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"checkpoint weights {prefix!r} do not match the model: {first}"
                              ) from None
