"""Atomic writes: temp file in the same directory, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the renames into directory `path` durable (after `sync_dir=False` writes)."""
    _fsync_dir(Path(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, sync_dir: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename over `path`.

    `sync_dir=False` leaves the directory's fsync to the caller (`fsync_dir`), who writes
    many files into one directory and syncs it once at the end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give files the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        if sync_dir:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sync_dir: bool = True) -> None:
    with atomic_path(path, sync_dir=sync_dir) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, scratch_root: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in `scratch_root` and rename it to `final` only on success.

    `scratch_root` must be on the same filesystem as `final`. A failure leaves
    nothing at `final` and removes the scratch directory.
    """
    final = Path(final)
    scratch_root = Path(scratch_root)
    scratch_root.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=scratch_root))
    try:
        yield work
        if final.exists():
            raise FileExistsError(f"{final} already exists")
        os.replace(work, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
