"""Default models that ship inside the package, registered on first use.

Each sub-directory of `polychrome/assets/models/` is a model directory
(config.json + model.safetensors + card.md + metrics.json) made by
`scripts/train_defaults.py`. They are indexed in place (nothing copied) the first
time a process touches the model store of a POLYCHROME_HOME, so `polychrome serve`
or `polychrome generate emoji-stargan ...` work on an empty home, offline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy import select

from ..errors import PolychromeError
from ..models.base import CONFIG_NAME, WEIGHTS_NAME
from ..settings import get_settings
from .db import exclusive, session_scope

log = logging.getLogger(__name__)

BUNDLED_ROOT = Path(__file__).resolve().parent.parent / "assets" / "models"
# A bundled model's stored path: resolved against each machine's own installation, so
# machines that share one database may install the package in different places.
BUNDLED_PREFIX = "bundled:"
_done_for: set[str] = set()  # databases already checked by this process


def bundled_dir(name: str) -> Path:
    return BUNDLED_ROOT / name


def bundled_path(model_dir: Path) -> str:
    """How a bundled model directory is stored: `bundled:<name>` when it ships in this
    package, else its absolute path."""
    model_dir = model_dir.resolve()
    if model_dir.parent == BUNDLED_ROOT.resolve():
        return BUNDLED_PREFIX + model_dir.name
    return str(model_dir)


def bundled_model_dirs() -> list[tuple[str, Path]]:
    """(name, directory) of every model shipped with this installation."""
    if not BUNDLED_ROOT.is_dir():
        return []
    return sorted((d.name, d) for d in BUNDLED_ROOT.iterdir()
                  if (d / CONFIG_NAME).is_file() and (d / WEIGHTS_NAME).is_file())


def _shipped_metrics(d: Path) -> dict:
    p = d / "metrics.json"
    if not p.is_file():
        return {}
    try:
        return dict(json.loads(p.read_text()))
    except (ValueError, TypeError):
        log.warning("ignoring unreadable %s", p)
        return {}


def ensure_bundled_models() -> list[dict]:
    """Index every bundled model not yet indexed in this home; returns what was added."""
    settings = get_settings()
    key = settings.db_url
    if key in _done_for or not settings.bundled_models:
        return []
    from .models import ModelVersion, add_model_version  # local: models imports this module

    added = []
    # Every replica and worker of a deployment starts at once: one registers, the others
    # wait and then find the models already indexed.
    with exclusive("bundled-models"):
        for name, d in bundled_model_dirs():
            with session_scope() as s:
                known = s.scalars(select(ModelVersion).where(
                    ModelVersion.name == name, ModelVersion.bundled == 1,
                    ModelVersion.path == bundled_path(d))).first()
            if known is not None:
                continue
            try:
                added.append(add_model_version(d, name, bundled=True,
                                               metrics=_shipped_metrics(d),
                                               source_run="bundled"))
            except PolychromeError as e:  # a broken install must not stop the platform
                log.warning("bundled model %s not registered: %s", name, e)
    _done_for.add(key)
    return added
