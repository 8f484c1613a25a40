"""The registry of trained models: immutable versions under $HOME/models/<name>/<version>/.

A version directory is a model directory (config.json + model.safetensors, see
`GANModel.save_pretrained`) plus a generated `card.md`. SQLite (table
`model_versions`) indexes them; the directory is the source of truth for the
weights, the row for metrics and provenance.

`bundled=True` indexes a directory that ships with Polychrome in place (absolute
path, nothing copied, nothing ever written into or deleted from it): its card is
rendered from the index instead of a file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    UniqueConstraint,
    delete,
    func,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from .. import __version__
from ..errors import ModelError, NotFound
from ..models.base import CONFIG_NAME, WEIGHTS_NAME, GANModel
from ..settings import get_settings
from ..utils.atomic import atomic_directory, atomic_write_text
from .bundled import BUNDLED_PREFIX, bundled_dir, bundled_path, ensure_bundled_models
from .db import Base, next_version, pick_version, session_scope, utcnow

log = logging.getLogger(__name__)


# -- tables ----------------------------------------------------------------------------
class ModelVersion(Base):
    """A trained model directory registered under models/<name>/<version>/."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    arch: Mapped[str] = mapped_column(String(64))  # registry name, e.g. "dcgan"
    family: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(1024))  # relative to the storage root; bundled:<dir> for shipped
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    styles: Mapped[list] = mapped_column(JSON, default=list)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    source_run: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    bundled: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
CARD_NAME = "card.md"


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Where a model lives and what it is, without loading its weights.

    `name`/`version` are None for a model given by path outside the registry.
    """

    name: str | None
    version: int | None
    path: Path
    arch: str
    family: str
    styles: list[str]
    metrics: dict[str, Any]
    bundled: bool = False

    @property
    def spec(self) -> str:
        """A string `resolve_model` maps back to this exact model."""
        if self.name is None:
            return str(self.path)
        return f"{self.name}:{self.version}"


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ModelError(
            f"invalid model name {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit",
            code="bad_name",
        )
    return name


def _read_config(model_dir: Path) -> dict[str, Any]:
    cfg_path = model_dir / CONFIG_NAME
    if not cfg_path.is_file() or not (model_dir / WEIGHTS_NAME).is_file():
        raise ModelError(f"{model_dir} is not a model directory "
                         f"(needs {CONFIG_NAME} and {WEIGHTS_NAME})", code="not_a_model")
    try:
        spec = json.loads(cfg_path.read_text())
        spec["model"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{cfg_path} is not a valid model config: {e}",
                         code="not_a_model") from None
    return spec


def _styles_of(spec: dict[str, Any]) -> list[str]:
    styles = spec.get("meta", {}).get("styles")
    if styles:
        return [str(s) for s in styles]
    return [str(i) for i in range(int(spec.get("config", {}).get("num_domains", 1)))]


def _abs_path(row: ModelVersion) -> Path:
    if row.path.startswith(BUNDLED_PREFIX):
        return bundled_dir(row.path[len(BUNDLED_PREFIX):])
    return get_settings().stored(row.path)


def _ref_from_row(row: ModelVersion) -> ModelRef:
    return ModelRef(name=row.name, version=row.version, path=_abs_path(row), arch=row.arch,
                    family=row.family, styles=list(row.styles or []),
                    metrics=dict(row.metrics or {}), bundled=bool(row.bundled))


# -- model card ------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


_FIRST_COLUMNS = ("dataset", "split", "n", "fid", "fid_floor", "fid_ceiling", "fid_position",
                  "kid_mean", "kid_std", "precision", "recall", "evaluator_accuracy",
                  "sample_accuracy")


_PER_STYLE = re.compile(r"^(?P<key>[^\[\]]+)\[(?P<style>[^\[\]]+)\]$")  # "fid[cartoon]"
_INSTRUMENT_NOTE = (
    "Each FID comes with its instrument, measured in the same run on held-out images: "
    "`fid_floor` (two halves of the real set), `fid_ceiling` (real vs noise images) and "
    "`fid_position` = (fid - floor) / (ceiling - floor), 0 at the floor and 1 at the "
    "ceiling; `evaluator_accuracy` is the evaluator's held-out style accuracy (mean over "
    "styles; the rotation head's with one style); `ref_*` are the FIDs of blurred, noised and "
    "other-style real images; `sample_accuracy` / `style_accuracy` are the share of "
    "generated images the evaluator recognises as the style they were made in.")


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    """One row per evaluation (nested dicts, e.g. per extractor); flat values form "training".

    Per-style figures (`key[style]`) go to a second table: one row per (evaluation, key),
    one column per style.
    """
    if not metrics:
        return ["No metrics measured yet (run `polychrome eval`)."]
    rows = {k: v for k, v in sorted(metrics.items()) if isinstance(v, dict)}
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    if flat:
        rows = {"training": flat, **rows}
    per_style: dict[tuple[str, str], dict[str, Any]] = {}
    styles: list[str] = []
    scalar_rows: dict[str, dict[str, Any]] = {}
    for name, row in rows.items():
        scalar_rows[name] = {}
        for k, v in row.items():
            m = _PER_STYLE.match(k)
            if m is None:
                scalar_rows[name][k] = v
                continue
            per_style.setdefault((name, m["key"]), {})[m["style"]] = v
            if m["style"] not in styles:
                styles.append(m["style"])
    keys = {k for row in scalar_rows.values() for k in row}
    columns = [c for c in _FIRST_COLUMNS if c in keys] + sorted(keys - set(_FIRST_COLUMNS))
    lines = ["| evaluation | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for name, row in scalar_rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row[c]) if c in row else "" for c in columns)
                     + " |")
    if per_style:
        lines += ["", "Per style:", "", "| evaluation | figure | " + " | ".join(styles) + " |",
                  "|---" * (len(styles) + 2) + "|"]
        for (name, key), values in per_style.items():
            lines.append(f"| {name} | {key} | "
                         + " | ".join(_fmt(values[s]) if s in values else "" for s in styles)
                         + " |")
    if "fid_position" in keys or any(k == "fid_position" for _, k in per_style):
        lines += ["", _INSTRUMENT_NOTE]
    return lines


def render_card(name: str, version: int, spec: dict[str, Any], *, metrics: dict[str, Any],
                source_run: str | None, created: dt.datetime) -> str:
    """The model card: what the model is, where it came from, what was measured."""
    meta = spec.get("meta", {})
    cfg = spec.get("config", {})
    styles = _styles_of(spec)
    lines = [
        f"# {name} v{version}",
        "",
        f"- architecture: `{spec['model']}` (family: {spec.get('family', 'noise')})",
        f"- resolution: {cfg.get('resolution', '?')} px, channels: {cfg.get('channels', '?')}",
        f"- styles ({len(styles)}): {', '.join(styles)}",
        f"- dataset: {meta.get('dataset', 'unknown')}",
        f"- training steps: {meta.get('step', 'unknown')}",
        f"- training run: {source_run or meta.get('run', 'unknown')}",
        f"- registered: {created.strftime('%Y-%m-%d %H:%M:%S')} UTC (polychrome {__version__})",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(cfg, indent=2, sort_keys=True),
        "```",
        "",
        "## Measured metrics",
        "",
        *_metrics_table(metrics),
        "",
        "Only metrics measured with the `inception` extractor compare with published numbers; "
        "`offline:*` numbers compare only with each other for the same dataset version.",
    ]
    licence = meta.get("license") or meta.get("licence")
    credits = meta.get("credits")
    if licence or credits:
        lines += ["", "## Licence and credits", ""]
        if licence:
            lines.append(f"- licence: {licence}")
        if credits:
            lines.append(f"- credits: {credits}")
    return "\n".join(lines) + "\n"


# -- registry operations ---------------------------------------------------------------------
def _next_version(name: str) -> int:
    with session_scope() as s:
        db_max = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
    return next_version([db_max], get_settings().models_dir / name)


def add_model_version(model_dir: Path, name: str, *, source_run: str | None = None,
                      metrics: dict | None = None, bundled: bool = False) -> dict:
    """Register `model_dir` as the next version of `name`.

    Copies config.json + model.safetensors into $HOME/models/<name>/<version>/ (built in
    the scratch dir, renamed into place), checks the copy loads, writes card.md and
    indexes it. Returns {"name","version","path","arch","family","styles"}.
    """
    validate_model_name(name)
    model_dir = Path(model_dir)
    spec = _read_config(model_dir)
    settings = get_settings()
    settings.ensure_dirs()
    metrics = dict(metrics or {})
    created = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if source_run is not None and not bundled:
        source_run = settings.to_stored(source_run)  # runs/... on the shared storage

    for _attempt in range(5):  # another process may take the same version number
        version = _next_version(name)
        final = settings.models_dir / name / str(version)
        if bundled:
            _check_loads(model_dir)
            final = model_dir.resolve()
            stored_path = bundled_path(final)
        else:
            try:
                with atomic_directory(final, settings.tmp_dir) as work:
                    for fname in (CONFIG_NAME, WEIGHTS_NAME):
                        shutil.copy2(model_dir / fname, work / fname)
                    _check_loads(work)
                    atomic_write_text(work / CARD_NAME, render_card(
                        name, version, spec, metrics=metrics, source_run=source_run,
                        created=created))
            except FileExistsError:
                continue
            except BaseException:
                _rmdir_if_empty(final.parent)
                raise
            stored_path = settings.to_stored(final)
        try:
            with session_scope() as s:
                s.add(ModelVersion(
                    name=name, version=version, arch=spec["model"],
                    family=spec.get("family", "noise"), path=stored_path, created=created,
                    styles=_styles_of(spec), metrics=metrics, source_run=source_run,
                    bundled=int(bundled), score=_score(metrics)))
        except Exception:
            if not bundled:
                shutil.rmtree(final, ignore_errors=True)
                _rmdir_if_empty(final.parent)
            if _attempt < 4 and _version_taken(name, version):
                continue
            raise
        log.info("registered model %s version %d at %s", name, version, final)
        return {"name": name, "version": version, "path": str(final), "arch": spec["model"],
                "family": spec.get("family", "noise"), "styles": _styles_of(spec)}
    raise ModelError(f"could not allocate a version for model {name!r}; try again",
                     code="busy")


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (other versions) or already gone


def _version_taken(name: str, version: int) -> bool:
    with session_scope() as s:
        return s.scalar(select(ModelVersion.id).where(
            ModelVersion.name == name, ModelVersion.version == version)) is not None


def _check_loads(model_dir: Path) -> None:
    try:
        GANModel.from_pretrained(model_dir)
    except (ModelError, SafetensorError, RuntimeError, OSError, ValueError) as e:
        raise ModelError(f"model directory {model_dir} does not load: {e}",
                         code="bad_model") from None


def _score(metrics: dict[str, Any]) -> float | None:
    """A single sortable number (lower is better): the first FID found, if any."""
    if isinstance(metrics.get("fid"), int | float):
        return float(metrics["fid"])
    for value in metrics.values():
        if isinstance(value, dict) and isinstance(value.get("fid"), int | float):
            return float(value["fid"])
    return None


def _rows(name: str) -> list[ModelVersion]:
    with session_scope() as s:
        return list(s.scalars(select(ModelVersion).where(ModelVersion.name == name)
                              .order_by(ModelVersion.version)))


def _known_names() -> list[str]:
    with session_scope() as s:
        return sorted(set(s.scalars(select(ModelVersion.name))))


def _not_found(name: str) -> NotFound:
    known = _known_names()
    listing = ", ".join(known) if known else "(none registered yet)"
    return NotFound(f"no model named {name!r}; known models: {listing}. "
                    "Use a registered name, name:version, or the path of a model directory")


def _parse_spec(spec: str) -> tuple[str, int | None]:
    if ":" in spec:
        name, _, ver = spec.rpartition(":")
        if (ver.isascii() and ver.isdigit()) and NAME_RE.match(name):
            return name, int(ver)
    return spec, None


def _get_row(name: str, version: int | None) -> ModelVersion:
    rows = _rows(name)
    if not rows:
        raise _not_found(name)
    return pick_version(rows, version, f"model {name!r}")


def resolve_model(spec: str) -> ModelRef:
    """`name` (latest version), `name:version`, or the path of a model directory."""
    spec = str(spec)
    ensure_bundled_models()
    name, version = _parse_spec(spec)
    if NAME_RE.match(name) and _rows(name):
        return _ref_from_row(_get_row(name, version))
    path = Path(spec).expanduser()
    if path.is_dir():
        cfg = _read_config(path)
        return ModelRef(name=None, version=None, path=path.resolve(), arch=cfg["model"],
                        family=cfg.get("family", "noise"), styles=_styles_of(cfg), metrics={})
    if version is not None and NAME_RE.match(name):
        raise _not_found(name)
    raise _not_found(spec)


def load_model(spec: str | ModelRef, device: str = "cpu", runtime: str = "torch") -> GANModel:
    """The model in eval() mode, with `.model_ref` telling where it came from.

    `runtime` "onnx" runs its inference networks through ONNX Runtime (polychrome.runtime);
    the pipelines cannot tell the difference."""
    from ..runtime import check_runtime, use_runtime

    runtime = check_runtime(runtime)  # a bad name fails before any weights are read
    ref = spec if isinstance(spec, ModelRef) else resolve_model(spec)
    model = GANModel.from_pretrained(ref.path, map_location=device)
    model.eval()
    model.model_ref = ref
    return use_runtime(model, runtime)


def list_models_registered() -> list[dict]:
    """One entry per model name: its latest version's description and all versions."""
    ensure_bundled_models()
    with session_scope() as s:
        rows = list(s.scalars(select(ModelVersion).order_by(ModelVersion.name,
                                                            ModelVersion.version)))
    out: dict[str, dict] = {}
    for r in rows:
        out[r.name] = {
            "name": r.name, "latest_version": r.version,
            "versions": [*out.get(r.name, {}).get("versions", []), r.version],
            "arch": r.arch, "family": r.family, "styles": list(r.styles or []),
            "metrics": dict(r.metrics or {}), "created": r.created.isoformat(),
            "bundled": bool(r.bundled),
        }
    return list(out.values())


def restoration_models() -> list[dict]:
    """Every registered restoration model (its latest version), in the order the names were
    first registered: [{"name", "version", "task", "scales", "styles"}]. Reads config.json
    only (no weights), so listings and the cascade's default upscaler stay cheap."""
    ensure_bundled_models()
    with session_scope() as s:
        rows = list(s.scalars(select(ModelVersion)
                              .where(ModelVersion.family == "restoration")
                              .order_by(ModelVersion.created, ModelVersion.id)))
    latest: dict[str, ModelVersion] = {}  # insertion order = first registration
    for r in rows:
        if r.name not in latest or r.version > latest[r.name].version:
            latest[r.name] = r
    out = []
    for r in latest.values():
        try:
            spec = _read_config(_abs_path(r))
            cfg = spec["config"]
            task = str(cfg["task"])
            scales = [int(v) for v in cfg.get("scales") or []] if task == "sr" else [1]
            styles = [str(v) for v in (spec.get("meta") or {}).get("styles") or []]
        except (ModelError, KeyError, TypeError, ValueError):
            continue  # an unreadable directory is not offered (loading it would fail)
        out.append({"name": r.name, "version": r.version, "task": task, "scales": scales,
                    "styles": styles})
    return out


# A shipped card's figures sit between marker comments that scripts/render_docs.py renders
# from committed outputs; a reader (CLI, page) gets the card without them.
_FIGURES_BEGIN = re.compile(r"^<!-- [a-z0-9-]+-figures: [^\n]*-->\n\n?", re.M)
_FIGURES_END = re.compile(r"\n?^<!-- /[a-z0-9-]+-figures -->\n", re.M)


def card_for_reading(text: str) -> str:
    """A card as people read it: the figures blocks' marker comments left out."""
    return _FIGURES_END.sub("", _FIGURES_BEGIN.sub("", text))


def _card_text(row: ModelVersion) -> str:
    path = _abs_path(row)
    card = path / CARD_NAME
    if card.is_file():  # bundled models ship their own card
        return card_for_reading(card.read_text())
    try:
        spec = _read_config(path)
    except ModelError as e:
        return f"# {row.name} v{row.version}\n\n(model directory unreadable: {e})\n"
    return render_card(row.name, row.version, spec, metrics=dict(row.metrics or {}),
                       source_run=row.source_run, created=row.created)


def show_model(name: str) -> dict:
    """Everything about a model: all versions, and the card of the latest (or of name:version)."""
    ensure_bundled_models()
    base, version = _parse_spec(name)
    row = _get_row(base, version)
    versions = [{
        "version": r.version, "path": str(_abs_path(r)), "arch": r.arch, "family": r.family,
        "styles": list(r.styles or []), "metrics": dict(r.metrics or {}),
        "source_run": r.source_run, "created": r.created.isoformat(), "bundled": bool(r.bundled),
    } for r in _rows(base)]
    return {
        "name": base, "version": row.version, "latest_version": versions[-1]["version"],
        "versions": versions, "arch": row.arch, "family": row.family,
        "styles": list(row.styles or []), "metrics": dict(row.metrics or {}),
        "path": str(_abs_path(row)), "card": _card_text(row),
    }


def update_metrics(name: str, version: int | None, metrics: dict[str, Any]) -> dict:
    """Merge `metrics` into a version's record and rewrite its card.md. Returns all metrics."""
    with session_scope() as s:
        q = select(ModelVersion).where(ModelVersion.name == name)
        q = q.where(ModelVersion.version == version) if version is not None else \
            q.order_by(ModelVersion.version.desc()).limit(1)
        row = s.scalars(q).first()
        if row is None:
            raise _not_found(name) if not _rows(name) else NotFound(
                f"model {name!r} has no version {version}")
        merged = {**(row.metrics or {}), **metrics}
        row.metrics = merged  # a new dict, so SQLAlchemy sees the change
        row.score = _score(merged)
        s.flush()
        if not row.bundled:
            path = _abs_path(row)
            if path.is_dir():
                atomic_write_text(path / CARD_NAME, render_card(
                    row.name, row.version, _read_config(path), metrics=merged,
                    source_run=row.source_run, created=row.created))
    return merged


def remove_model(name: str, version: int | None = None) -> list[int]:
    """Delete a version (or all versions) of a model: files first (bundled: index only)."""
    rows = _rows(name)
    if not rows:
        raise _not_found(name)
    if version is not None:
        rows = [r for r in rows if r.version == version]
        if not rows:
            raise NotFound(f"model {name!r} has no version {version}")
    settings = get_settings()
    removed = []
    for r in rows:
        if not r.bundled:
            path = _abs_path(r)
            if path.exists():
                # rename out of the way first so a half-deleted dir is never visible
                trash = Path(tempfile.mkdtemp(prefix="removed-model.", dir=settings.tmp_dir))
                path.rename(trash / "v")
                shutil.rmtree(trash, ignore_errors=True)
        with session_scope() as s:
            s.execute(delete(ModelVersion).where(ModelVersion.id == r.id))
        removed.append(r.version)
    _rmdir_if_empty(settings.models_dir / name)
    log.info("removed model %s versions %s", name, removed)
    return removed
