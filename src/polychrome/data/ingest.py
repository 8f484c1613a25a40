"""Building one dataset version from a source: decode, clean, de-duplicate, lay out.

`build_version` fills a scratch directory with images/<domain>/<stem>.png,
manifest.json and report.json (the layout documented in store.py); the store
decides where that directory goes and indexes it.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError, ImageRejected
from ..imageio import decode_image, encode_png
from ..utils.atomic import atomic_write_json
from .clean import (
    DEFAULT_DOMAIN,
    Deduper,
    Fingerprint,
    domain_and_stem,
    fingerprint,
    safe_component,
    unique_stem,
    wrapper_depth,
)
from .sources import FolderSource, Source, shown_name

REASONS = ("corrupt", "too_small", "duplicate", "unsupported", "unsafe")
Progress = Callable[[int, int], None]  # (done, total); total 0 when unknown (tar streams)
_MAX_WORKERS = 4  # decode/encode threads


@dataclass
class _Candidate:
    """A decoded image waiting for domain assignment and de-duplication."""

    report: dict
    parts: tuple[str, ...]
    staged: Path  # normalised PNG in the scratch dir
    fp: Fingerprint
    width: int
    height: int


def _process(data: bytes, staged: Path, min_size: int, max_pixels: int) -> tuple:
    """Decode once, check, hash and write the normalised PNG (runs in a worker thread).

    Returns ("", "", fingerprint, width, height) or (reason, detail, None, 0, 0).
    """
    try:
        arr = decode_image(data, max_pixels=max_pixels)  # (H, W, 3) uint8, EXIF applied
    except ImageRejected as e:
        # a pixel bomb is an attack, not a broken file
        reason = {"too_large": "unsafe", "unsupported": "unsupported"}.get(e.code, "corrupt")
        return reason, str(e), None, 0, 0
    h, w = arr.shape[:2]
    if min(h, w) < min_size:
        return "too_small", f"{w}x{h} px, shorter side < {min_size}", None, 0, 0
    staged.write_bytes(encode_png(arr))
    return "", "", fingerprint(arr), w, h


def _read_source(source: Source, staging: Path, min_size: int, max_pixels: int,
                 progress: Progress | None) -> tuple[list[dict], list[tuple[str, ...] | None],
                                                      list[_Candidate]]:
    """Decode every member once; keep normalised PNGs of the usable ones in `staging`.

    Members are read in this thread (archive readers are not thread-safe) and
    processed by a small pool: Pillow and zlib release the GIL, so two cores help.
    A bounded window of pending members keeps memory flat on big archives.
    """
    report: list[dict] = []
    parts_of: list[tuple[str, ...] | None] = []
    candidates: list[_Candidate] = []
    total = source.total or 0
    workers = min(_MAX_WORKERS, os.cpu_count() or 1)
    pending: collections.deque = collections.deque()

    def finish() -> None:
        entry, parts, future, staged = pending.popleft()
        if future is not None:
            reason, detail, fp, w, h = future.result()
            if reason:
                entry.update(status=reason, detail=detail)
            else:
                candidates.append(_Candidate(entry, parts, staged, fp, w, h))
        if progress is not None:
            progress(len(report) - len(pending), total)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
        for i, m in enumerate(source):
            entry = {"source_name": m.name, "domain": None, "status": m.reason or "",
                     "detail": m.detail}
            report.append(entry)
            parts_of.append(m.parts)
            staged = staging / f"{i}.png"
            future = None if m.reason else pool.submit(_process, m.data, staged, min_size,
                                                       max_pixels)
            pending.append((entry, m.parts, future, staged))
            while len(pending) > 4 * workers:
                finish()
        while pending:
            finish()
    return report, parts_of, candidates


def renamed(parts: tuple[str, ...], depth: int) -> str:
    """Why a member's style folder or file name is stored under another name, or "".

    Stored names are single path components of at most 120 bytes, without separators,
    control characters, a leading dot or surrounding spaces; the report says when that
    changed a name."""
    rel = parts[depth:]
    notes = []
    raw_domain = rel[0] if len(rel) > 1 else DEFAULT_DOMAIN
    raw_stem = rel[-1].rsplit(".", 1)[0] if "." in rel[-1] else rel[-1]
    for what, raw, fallback in (("style folder", raw_domain, "_"), ("file", raw_stem, "image")):
        safe = safe_component(raw, fallback=fallback)
        if safe == raw:
            continue
        if len(raw.strip().encode("utf-8")) > 120:
            notes.append(f"{what} name of {len(raw.encode('utf-8'))} bytes cut to 120")
        else:
            notes.append(f"{what} name '{shown_name(raw)}' stored as '{safe}'")
    return "; ".join(notes)


def _place(candidates: list[_Candidate], images_dir: Path, depth: int) -> list[dict]:
    """De-duplicate per domain (first in sorted order wins), name and move into place.

    Returns manifest image entries sorted by domain then file.
    """
    by_domain: dict[str, list[_Candidate]] = {}
    for c in candidates:
        by_domain.setdefault(c.report["domain"], []).append(c)
    images: list[dict] = []
    for domain in sorted(by_domain):
        dedupe, taken, kept_names = Deduper(), set(), []
        for c in sorted(by_domain[domain], key=lambda c: c.report["source_name"]):
            hit = dedupe.match(c.fp)
            if hit is not None:
                idx, kind = hit
                c.report.update(status="duplicate", detail=f"{kind} duplicate of {kept_names[idx]}")
                c.staged.unlink()
                continue
            dedupe.add(c.fp)
            kept_names.append(c.report["source_name"])
            stem = unique_stem(domain_and_stem(c.parts, depth)[1], taken)
            rel = f"images/{domain}/{stem}.png"
            dest = images_dir.parent / rel
            (images_dir / domain).mkdir(parents=True, exist_ok=True)
            if dest.exists():  # only on a case-insensitive filesystem: never overwrite
                raise DatasetError(f"style folders that differ only in letter case collide on "
                                   f"this filesystem at {rel}; rename one", code="name_clash")
            os.replace(c.staged, dest)
            note = renamed(c.parts, depth)
            c.report.update(status="imported",
                            detail=f"{rel} (renamed: {note})" if note else rel)
            images.append({"file": rel, "domain": domain, "source_name": c.report["source_name"],
                           "sha256": c.fp.sha256, "phash": c.fp.phash_hex,
                           "width": c.width, "height": c.height})
    images.sort(key=lambda e: (e["domain"], e["file"]))
    return images


def build_version(source: Source, work: Path, name: str, version: int, min_size: int,
                  max_pixels: int, progress: Progress | None = None) -> dict:
    """Fill `work` with images/, manifest.json and report.json; returns the manifest."""
    staging = work / "staging"
    staging.mkdir()
    report, parts_of, candidates = _read_source(source, staging, min_size, max_pixels, progress)
    # A folder is its own root; an archive or upload may wrap everything in one folder.
    safe_parts = [p for p in parts_of if p]
    depth = 0 if isinstance(source, FolderSource) else wrapper_depth(safe_parts)
    for entry, parts in zip(report, parts_of, strict=True):
        if parts:
            entry["domain"] = domain_and_stem(parts, depth)[0]
    images = _place(candidates, work / "images", depth)
    staging.rmdir()
    report.sort(key=lambda e: e["source_name"])
    rejected = {r: 0 for r in REASONS}
    domains: dict[str, int] = {}
    for entry in report:
        if entry["status"] == "imported":
            domains[entry["domain"]] = domains.get(entry["domain"], 0) + 1
        else:
            rejected[entry["status"]] += 1
    if not images:
        summary = ", ".join(f"{k} {v}" for k, v in rejected.items() if v) or "no files found"
        raise DatasetError(f"no valid images in {source.description} ({summary})",
                           code="no_images")
    manifest = {
        "name": name, "version": version,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": source.description, "min_size": min_size,
        "domains": dict(sorted(domains.items())), "rejected": rejected, "images": images,
    }
    atomic_write_json(work / "report.json", report)
    atomic_write_json(work / "manifest.json", manifest)
    return manifest
