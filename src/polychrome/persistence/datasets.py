"""The dataset store: import (read, decode, clean, index) and list / show / resolve /
export / remove. The CLI and the REST API both call these functions.

Layout of one immutable version (a contract with data/cache.py)::

    $POLYCHROME_HOME/datasets/<name>/<version>/
      images/<domain>/<stem>.png   RGB uint8 PNG at its original size
      manifest.json                name, version, created, source, domains, rejected, images[]
      report.json                  one {source_name, domain, status, detail} per file considered

A version is built in Settings.tmp_dir and renamed into place only when complete;
its DB rows go in afterwards in one transaction, and the directory is removed again
if that fails, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import statistics
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, UniqueConstraint, insert, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..data.ingest import Progress, build_version
from ..data.sources import Limits, open_source
from ..errors import DatasetError, NotFound
from ..settings import Settings, get_settings
from ..utils.atomic import atomic_directory, atomic_path
from .db import Base, next_version, pick_version, session_scope, utcnow

log = logging.getLogger(__name__)


# -- tables ----------------------------------------------------------------------------
class DatasetVersion(Base):
    """One immutable imported version of a named dataset."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))  # relative to home
    source: Mapped[str] = mapped_column(String(1024))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    n_images: Mapped[int] = mapped_column(Integer)
    domains: Mapped[dict] = mapped_column(JSON)  # {"style": count}
    rejected: Mapped[dict] = mapped_column(JSON)  # {"reason": count}

    images: Mapped[list[DatasetImage]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", passive_deletes=True
    )


class DatasetImage(Base):
    __tablename__ = "dataset_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), index=True
    )
    domain: Mapped[str] = mapped_column(String(128), index=True)
    file: Mapped[str] = mapped_column(String(1024))  # relative to the dataset version dir
    source_name: Mapped[str] = mapped_column(String(1024))  # name inside the source
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the normalised pixels
    phash: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)

    dataset: Mapped[DatasetVersion] = relationship(back_populates="images")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class DatasetRef:
    name: str
    version: int
    path: Path  # absolute dataset version directory
    manifest: dict


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise DatasetError(f"invalid dataset name {name!r}: use 1-64 letters, digits, '.', '_' "
                           "or '-', starting with a letter or digit", code="bad_name")
    return name


def _parse_ref(name: str, version: int | None) -> tuple[str, int | None]:
    """Accept "name" or "name:version" (version may also come separately)."""
    if isinstance(name, str) and ":" in name:
        base, _, v = name.rpartition(":")
        if not (v.isascii() and v.isdigit()):
            raise DatasetError(f"invalid dataset reference {name!r}: expected NAME or NAME:VERSION",
                               code="bad_name")
        if version is not None and int(v) != version:
            raise DatasetError(f"{name!r} conflicts with version {version}", code="bad_name")
        name, version = base, int(v)
    return validate_name(name), version


@contextlib.contextmanager
def _name_lock(settings: Settings, name: str) -> Iterator[None]:
    """Serialise imports/removals of one name across processes (version numbers)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: the UNIQUE(name, version) backstops
        yield
        return
    lock_dir = settings.tmp_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"dataset-{name}.lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _next_version(settings: Settings, name: str) -> int:
    with session_scope() as s:
        in_db = s.scalars(select(DatasetVersion.version).where(DatasetVersion.name == name)).all()
    return next_version(in_db, settings.datasets_dir / name)


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _index(settings: Settings, manifest: dict, final: Path) -> None:
    """Insert the version and its images in one transaction."""
    created = dt.datetime.fromisoformat(manifest["created"]).replace(tzinfo=None)
    with session_scope() as s:
        row = DatasetVersion(
            name=manifest["name"], version=manifest["version"],
            path=settings.to_stored(final), source=manifest["source"],
            created=created, n_images=len(manifest["images"]),
            domains=manifest["domains"], rejected=manifest["rejected"],
        )
        s.add(row)
        s.flush()
        fields = ("domain", "file", "source_name", "sha256", "phash", "width", "height")
        s.execute(insert(DatasetImage),
                  [{"dataset_id": row.id, **{k: e[k] for k in fields}} for e in manifest["images"]])


def import_dataset(src: str | os.PathLike | Sequence[tuple[str, bytes]], name: str, *,
                   min_size: int = 32, progress: Progress | None = None) -> dict:
    """Import a folder / zip / tar / uploaded files as the next version of `name`.

    Returns {"name", "version", "images", "domains": {style: n}, "rejected": {reason: n}}
    with all five reasons present. Raises DatasetError (nothing written) when the
    source is missing or unreadable or holds no usable image.
    """
    validate_name(name)
    if int(min_size) < 1:
        raise DatasetError(f"--min-size must be at least 1, got {min_size}", code="bad_option")
    settings = get_settings()
    settings.ensure_dirs()
    limits = Limits.from_settings(settings)
    with _name_lock(settings, name):
        version = _next_version(settings, name)
        final = settings.datasets_dir / name / str(version)
        try:
            with open_source(src, limits) as source:
                with atomic_directory(final, settings.tmp_dir) as work:
                    manifest = build_version(source, work, name, version, int(min_size),
                                             settings.max_pixels, progress)
            try:
                _index(settings, manifest, final)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
        except BaseException:
            _rmdir_if_empty(final.parent)
            raise
    log.info("imported %s version %d: %d images in %d domains from %s", name, version,
             len(manifest["images"]), len(manifest["domains"]), manifest["source"])
    return {"name": name, "version": version, "images": len(manifest["images"]),
            "domains": manifest["domains"], "rejected": manifest["rejected"]}


# -- reading the store --------------------------------------------------------------------
def _version_row(name: str, version: int | None) -> DatasetVersion:
    with session_scope() as s:
        q = select(DatasetVersion).where(DatasetVersion.name == name)
        rows = s.scalars(q.order_by(DatasetVersion.version)).all()
    if not rows:
        raise NotFound(f"no dataset named {name!r}")
    return pick_version(rows, version, f"dataset {name!r}")


def resolve_dataset(name: str, version: int | None = None) -> DatasetRef:
    """The directory and manifest of NAME (latest version) or NAME:VERSION; NotFound if missing."""
    name, version = _parse_ref(name, version)
    row = _version_row(name, version)
    path = get_settings().stored(row.path)
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # the stored (storage-relative) path: API answers never show where the server keeps files
        raise NotFound(f"files of dataset {name}:{row.version} are missing or damaged "
                       f"({row.path})") from None
    return DatasetRef(name, row.version, path, manifest)


def list_datasets() -> list[dict]:
    with session_scope() as s:
        rows = s.scalars(select(DatasetVersion).order_by(DatasetVersion.name,
                                                         DatasetVersion.version)).all()
    out: dict[str, dict] = {}
    for r in rows:  # ascending versions: the last one seen is the latest
        d = out.setdefault(r.name, {"name": r.name, "versions": []})
        d["versions"].append(r.version)
        d.update(latest_version=r.version, images=r.n_images, domains=r.domains,
                 created=r.created.isoformat(timespec="seconds"))
    return list(out.values())


def _spread(values: list[int]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def show_dataset(name: str, version: int | None = None) -> dict:
    """Counts per domain, size distribution, source, created, rejected counts, path."""
    name, version = _parse_ref(name, version)
    row = _version_row(name, version)
    with session_scope() as s:
        sizes = s.execute(select(DatasetImage.width, DatasetImage.height)
                          .where(DatasetImage.dataset_id == row.id)).all()
        versions = s.scalars(select(DatasetVersion.version).where(DatasetVersion.name == name)
                             .order_by(DatasetVersion.version)).all()
    return {
        "name": row.name, "version": row.version, "versions": list(versions),
        "path": str(get_settings().stored(row.path)), "source": row.source,
        "created": row.created.isoformat(timespec="seconds"),
        "images": row.n_images, "domains": row.domains, "rejected": row.rejected,
        "sizes": {"width": _spread([w for w, _ in sizes]),
                  "height": _spread([h for _, h in sizes])} if sizes else {},
    }


def dataset_report(name: str, version: int | None = None) -> list[dict]:
    """The per-file import report: [{"source_name", "domain", "status", "detail"}]."""
    ref = resolve_dataset(name, version)
    try:
        return json.loads((ref.path / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NotFound(f"dataset {ref.name}:{ref.version} has no readable report.json") from None


# -- export and removal ---------------------------------------------------------------------
def export_dataset(name: str, out: str | os.PathLike, version: int | None = None) -> Path:
    """Write a re-importable zip: <domain>/<stem>.png per image plus manifest.json."""
    ref = resolve_dataset(name, version)
    out = Path(out).expanduser()
    if out.is_dir():
        out = out / f"{ref.name}-{ref.version}.zip"
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w") as z:
        for img in ref.manifest["images"]:
            arcname = f"{img['domain']}/{Path(img['file']).name}"
            # PNGs are already deflated: storing them is faster and no bigger
            z.write(ref.path / img["file"], arcname, compress_type=zipfile.ZIP_STORED)
        z.writestr("manifest.json", json.dumps(ref.manifest, indent=2, sort_keys=True),
                   compress_type=zipfile.ZIP_DEFLATED)
    log.info("exported %s:%d to %s", ref.name, ref.version, out)
    return out


def remove_dataset(name: str, version: int | None = None) -> list[int]:
    """Remove one version (or all of them): files and DB rows. Returns removed versions."""
    name, version = _parse_ref(name, version)
    settings = get_settings()
    with _name_lock(settings, name):
        if version is not None:
            rows = [_version_row(name, version)]
        else:
            with session_scope() as s:
                rows = s.scalars(select(DatasetVersion).where(DatasetVersion.name == name)).all()
            if not rows:
                raise NotFound(f"no dataset named {name!r}")
        # Move directories aside first, so a failed DB delete can put them back.
        trash = Path(tempfile.mkdtemp(prefix=f"remove-{name}.", dir=settings.tmp_dir))
        moved: list[tuple[Path, Path]] = []
        try:
            for r in rows:
                src = settings.stored(r.path)
                if src.exists():
                    dst = trash / str(r.version)
                    os.replace(src, dst)
                    moved.append((dst, src))
            with session_scope() as s:
                for r in rows:
                    s.delete(s.get(DatasetVersion, r.id))
        except BaseException:
            for dst, src in moved:
                os.replace(dst, src)
            shutil.rmtree(trash, ignore_errors=True)
            raise
        shutil.rmtree(trash, ignore_errors=True)
        _rmdir_if_empty(settings.datasets_dir / name)
    removed = sorted(r.version for r in rows)
    log.info("removed dataset %s versions %s", name, removed)
    return removed
