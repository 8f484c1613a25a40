"""The style bank: named style codes saved per model, reusable anywhere a style is accepted.

Layout (per model; written atomically, the JSON last so a listed entry is complete):

    <storage_root>/stylebank/<model-name>/<style-name>.safetensors   code  float32 (D,)
    <storage_root>/stylebank/<model-name>/<style-name>.json          what it is, where from

<model-name> is the registry name (codes are shared by all versions of a model: a
version other than the one that made the code is allowed, with a warning, since
retraining changes what a code means). A model loaded from a directory outside the
registry gets `<dir-name>-<hash of its path>`.

What a code is depends on the model: a StarGAN style code s (`kind` "s") or a
StyleGAN intermediate latent w (`kind` "w"). Entries are immutable: a PNG made with
`bank:NAME` records the code's sha256, and regenerating it checks that the code is
still the same, so an entry is removed explicitly rather than overwritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import NotFound, PolychromeError
from ..models.base import GANModel
from ..sampling import model_identity
from ..settings import get_settings
from ..utils.atomic import atomic_path, atomic_write_json
from .generate import _slug

log = logging.getLogger(__name__)

BANK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
BANK_PREFIX = "bank:"


def validate_bank_name(name: str) -> str:
    if not isinstance(name, str) or not BANK_NAME_RE.match(name):
        raise PolychromeError(f"invalid style name {name!r}: use 1-64 characters from A-Z a-z "
                              "0-9 . _ - starting with a letter or digit", code="bad_name")
    return name


def bank_key(model: GANModel) -> str:
    """The directory name of a model's bank (registry name, or dir name + path hash)."""
    ref = getattr(model, "model_ref", None)
    if ref is not None and ref.name is not None:
        return ref.name
    if ref is not None:
        digest = hashlib.sha1(str(ref.path).encode()).hexdigest()[:8]
        return f"{_slug(Path(ref.path).name)}-{digest}"
    return _slug(str(model.meta.get("name", model.name)))


def bank_dir(model: GANModel) -> Path:
    return get_settings().storage / "stylebank" / bank_key(model)


def code_kind(model: GANModel) -> str | None:
    """'s' (StarGAN style code), 'w' (StyleGAN latent) or None (the model has no codes)."""
    if model.family == "translation" and hasattr(model, "style_from_latent"):
        return "s"
    gen = getattr(model, "generator", None)
    if model.family == "noise" and hasattr(gen, "mapping") and hasattr(gen, "synthesis"):
        return "w"
    return None


def code_dim(model: GANModel) -> int:
    return int(model.config.style_dim if code_kind(model) == "s" else model.config.w_dim)


def code_sha256(code: torch.Tensor) -> str:
    """sha256 of the code's float32 bytes (what PNG metadata records for bank entries)."""
    flat = code.detach().to("cpu", torch.float32).contiguous().reshape(-1)
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


def _paths(model: GANModel, name: str) -> tuple[Path, Path]:
    d = bank_dir(model)
    return d / f"{name}.safetensors", d / f"{name}.json"


def save_style(model: GANModel, name: str, code: torch.Tensor,
               source: dict[str, Any]) -> dict[str, Any]:
    """Store `code` ((D,) or (1, D)) as bank entry `name`; returns its description.

    `source` says where the code came from, e.g. {"kind": "reference", "file_sha256": ...}
    or {"kind": "latent", "style": "neon", "seed": 3}.
    """
    validate_bank_name(name)
    kind = code_kind(model)
    if kind is None:
        raise PolychromeError(f"{model.name} has no style codes to save (only stargan style "
                              "codes and stylegan w latents can go in the style bank)",
                              code="unsupported")
    flat = code.detach().to("cpu", torch.float32).reshape(-1).contiguous().clone()
    if flat.numel() != code_dim(model):
        raise PolychromeError(f"style code has {flat.numel()} values, {model.name} uses "
                              f"{code_dim(model)}", code="bad_request")
    st_path, js_path = _paths(model, name)
    if js_path.exists():
        raise PolychromeError(f"style bank entry {name!r} already exists for {bank_key(model)}; "
                              f"remove it first (polychrome styles remove {bank_key(model)} "
                              f"{name})", code="exists")
    if name in model.style_names:
        log.warning("bank entry %r has the name of a learned style: use it as bank:%s", name,
                    name)
    model_name, version = model_identity(model)
    entry = {
        "name": name, "model": model_name, "version": version, "arch": model.name,
        "kind": kind, "dim": int(flat.numel()), "code_sha256": code_sha256(flat),
        "source": dict(source),
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with atomic_path(st_path) as tmp:
        save_file({"code": flat}, str(tmp), metadata={"format": "polychrome-style"})
    atomic_write_json(js_path, entry)
    log.info("saved style %s for %s", name, bank_key(model))
    return entry


def list_bank(model: GANModel) -> list[dict[str, Any]]:
    """Every complete entry of the model's bank, sorted by name (unreadable ones skipped)."""
    d = bank_dir(model)
    out = []
    for js in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            entry = json.loads(js.read_text())
        except (OSError, ValueError):
            log.warning("skipping unreadable style bank entry %s", js)
            continue
        if isinstance(entry, dict) and (d / f"{js.stem}.safetensors").is_file():
            out.append(entry)
    return out


def has_style(model: GANModel, name: str) -> bool:
    return bool(BANK_NAME_RE.match(name)) and _paths(model, name)[1].is_file()


def load_style(model: GANModel, name: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """(code (D,) float32, entry) of bank entry `name`; checked against the model."""
    validate_bank_name(name)
    st_path, js_path = _paths(model, name)
    if not js_path.is_file():
        known = [e["name"] for e in list_bank(model)]
        raise NotFound(f"no style bank entry {name!r} for {bank_key(model)}; saved styles: "
                       f"{', '.join(known) if known else '(none)'}", code="unknown_style")
    try:
        entry = json.loads(js_path.read_text())
        code = load_file(str(st_path))["code"]
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise PolychromeError(f"style bank entry {name!r} is unreadable: {e}",
                              code="bad_style") from None
    if entry.get("arch") != model.name or code.numel() != code_dim(model):
        raise PolychromeError(f"style bank entry {name!r} was made by a {entry.get('arch')} "
                              f"with {code.numel()}-value codes; this model is a {model.name} "
                              f"with {code_dim(model)}", code="bad_style")
    version = model_identity(model)[1]
    if entry.get("version") and version and entry["version"] != version:
        log.warning("style %s was saved from version %s of %s, used with version %s", name,
                    entry["version"], entry.get("model"), version)
    return code.reshape(-1).float(), entry


def entry_style(entry: dict[str, Any]) -> str | None:
    """The learned style a bank code was made in, when all its components share one."""
    comps = entry.get("source", {}).get("components") or []
    styles = {c.get("style") for c in comps if isinstance(c, dict)}
    return styles.pop() if len(styles) == 1 and None not in styles else None


def remove_style(model: GANModel, name: str) -> None:
    validate_bank_name(name)
    st_path, js_path = _paths(model, name)
    if not js_path.exists():
        raise NotFound(f"no style bank entry {name!r} for {bank_key(model)}",
                       code="unknown_style")
    js_path.unlink()  # the JSON first: the entry stops being listed before its code goes
    st_path.unlink(missing_ok=True)
