"""Packed uint8 training cache: one safetensors file per (dataset version, resolution, fit).

Layout, in this machine's cache directory (a dataset given by path keeps it in `cache/` inside):

    <cache_dir>/datasets/<name>/<version>/<resolution>-<fit>.safetensors
        images  uint8 (N, 3, R, R)
        labels  int64 (N,)  index into `domains`
    <cache_dir>/datasets/<name>/<version>/<resolution>-<fit>.json
        {"format", "domains", "files", "fit", "resolution", "manifest_sha256", "count"}

The cache is built once (decode with the project's one decoder, square it, resize
with Pillow LANCZOS) and reused while the manifest's sha256 is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..errors import ConfigError, DatasetError, ImageRejected, NotFound
from ..settings import get_settings
from ..utils.atomic import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
FITS = ("crop", "pad")
SPLITS = ("train", "heldout", "all")
MAX_RESOLUTION = 4096
_PAD_VALUE = 255  # pad to square with white, the background the decoder composites alpha on


@dataclasses.dataclass
class PackedDataset:
    """A whole dataset as uint8 tensors in memory, ready for `InMemoryLoader`."""

    images: torch.Tensor  # (N, 3, R, R) uint8
    labels: torch.Tensor  # (N,) int64 domain index
    domains: list[str]  # index -> style name (sorted)
    files: list[str]  # manifest "file" per row, e.g. "images/noto/1f600.png"
    resolution: int
    fit: str = "crop"

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DatasetError(f"packed images must be uint8 (N, 3, R, R), got "
                               f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (n,) or len(self.files) != n:
            raise DatasetError(f"packed dataset rows disagree: {n} images, "
                               f"{tuple(self.labels.shape)} labels, {len(self.files)} files")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def domain_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.domains)).tolist()
        return dict(zip(self.domains, counts, strict=True))

    def subset(self, idx: torch.Tensor | Sequence[int] | np.ndarray) -> PackedDataset:
        """Rows `idx` (any integer index sequence); domains keep their indices."""
        index = torch.as_tensor(np.asarray(idx, dtype=np.int64).reshape(-1))
        return PackedDataset(
            images=self.images.index_select(0, index),
            labels=self.labels.index_select(0, index),
            domains=list(self.domains),
            files=[self.files[i] for i in index.tolist()],
            resolution=self.resolution,
            fit=self.fit,
        )

    def split(self, which: str, heldout_fraction: float = 0.1, seed: int = 0) -> PackedDataset:
        """A fixed train/held-out split by file stem ("train" | "heldout" | "all").

        The same stem (the same emoji drawn in every style folder) lands on the same
        side in every domain, so translation metrics can compare a held-out source
        with its real drawing in the target style. See `heldout_stems`.
        """
        if which not in SPLITS:
            raise ConfigError(f"unknown split {which!r}; choose one of {', '.join(SPLITS)}")
        if which == "all":
            return self
        held = heldout_stems(self.files, heldout_fraction, seed)
        want = which == "heldout"
        rows = [i for i, f in enumerate(self.files) if (_stem(f) in held) == want]
        return self.subset(rows)

    def gather(self, rows: torch.Tensor, key: int = 0) -> torch.Tensor:
        """(B,) rows -> (B, 3, R, R) uint8. `key` seeds the random crops of a crops-mode
        dataset (data/crops.py); whole pictures ignore it."""
        return self.images.index_select(0, rows)

    def stem_partners(self) -> torch.Tensor:
        """(N, K) int64: row of the same file stem in each domain, -1 where there is none.

        Style folders that draw the same subjects under the same names (the emoji set)
        give every image its ground-truth drawing in the other styles; translation
        metrics and stargan's optional paired loss look them up here.
        """
        by_stem: dict[str, int] = {}
        stems = torch.tensor([by_stem.setdefault(_stem(f), len(by_stem)) for f in self.files],
                             dtype=torch.int64)  # (N,) stem id per row
        table = torch.full((len(by_stem), self.num_domains), -1, dtype=torch.int64)
        table[stems, self.labels] = torch.arange(len(self), dtype=torch.int64)
        return table[stems]


def _stem(file: str) -> str:
    return PurePosixPath(file).stem


def _stem_score(stem: str, seed: int) -> float:
    """A stable uniform number in [0, 1) for a stem: same on every machine and run."""
    digest = hashlib.sha1(f"{seed}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def heldout_stems(files: Sequence[str], heldout_fraction: float = 0.1, seed: int = 0) -> set[str]:
    """Stems held out: those whose hash score falls below `heldout_fraction`.

    A threshold on a per-stem hash keeps a stem's side independent of the other
    files, so adding images to a dataset never moves existing ones. Fallback for
    tiny datasets: if the threshold selects nothing but a held-out set was asked
    for (and there are at least two stems), the stem with the lowest score is held
    out, so "heldout" is never empty by accident.
    """
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ConfigError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    scores = {s: _stem_score(s, seed) for s in {_stem(f) for f in files}}
    held = {s for s, v in scores.items() if v < heldout_fraction}
    if not held and heldout_fraction > 0 and len(scores) >= 2:
        held = {min(scores, key=lambda s: (scores[s], s))}
    return held


# -- building --------------------------------------------------------------------------
def cache_root(dataset_dir: Path) -> Path:
    """Where the packed caches of one dataset version live: this machine's cache directory
    (`Settings.cache`) for a stored dataset -- the store may be a shared filesystem, and a
    cache is rebuilt per machine, checked against the manifest -- or the version directory
    itself for a dataset given by path."""
    settings = get_settings()
    dataset_dir = Path(dataset_dir).resolve()
    try:
        rel = dataset_dir.relative_to(settings.datasets_dir.resolve())
    except ValueError:
        return dataset_dir / "cache"
    return settings.cache / "datasets" / rel


def cache_paths(dataset_dir: Path, resolution: int, fit: str) -> tuple[Path, Path]:
    """(safetensors path, json path) of one cache entry."""
    stem = cache_root(dataset_dir) / f"{resolution}-{fit}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _check_args(resolution: int, fit: str) -> None:
    if fit not in FITS:
        raise ConfigError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) \
            or not 1 <= resolution <= MAX_RESOLUTION:
        raise ConfigError(f"resolution must be an integer in [1, {MAX_RESOLUTION}], "
                          f"got {resolution!r}")


def _read_manifest(dataset_dir: Path) -> tuple[dict, str]:
    """(manifest, sha256 of its bytes); DatasetError when missing or malformed."""
    path = dataset_dir / "manifest.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{dataset_dir} is not a dataset version (no manifest.json)",
                           code="not_a_dataset") from None
    try:
        manifest = json.loads(raw)
        for entry in manifest["images"]:
            if not isinstance(entry["file"], str) or not isinstance(entry["domain"], str):
                raise TypeError("file and domain must be strings")
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path} is not a valid manifest: {e}", code="bad_manifest") from None
    return manifest, hashlib.sha256(raw).hexdigest()


def square_resize(arr: np.ndarray, resolution: int, fit: str = "crop") -> np.ndarray:
    """Square an image and resize it with antialiasing (Pillow LANCZOS).

    arr: (H, W, 3) uint8 -> (R, R, 3) uint8. "crop" keeps the centred square of
    side min(H, W); "pad" centres the image on a white square of side max(H, W).
    """
    h, w = arr.shape[:2]
    if fit == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        sq = arr[top:top + side, left:left + side]
    elif fit == "pad":
        side = max(h, w)
        sq = np.full((side, side, 3), _PAD_VALUE, dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        sq[top:top + h, left:left + w] = arr
    else:
        raise ConfigError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    if side == resolution:
        return np.ascontiguousarray(sq)
    img = Image.fromarray(np.ascontiguousarray(sq), mode="RGB")
    return np.array(img.resize((resolution, resolution), Image.Resampling.LANCZOS))


@contextlib.contextmanager
def _build_lock(lock_path: Path) -> Iterator[None]:
    """Serialise builders of one cache entry (e.g. several DDP ranks on one host)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: atomic renames still keep it safe
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def decode_entry(dataset_dir: Path, rel: str) -> np.ndarray:
    """Manifest entry `rel` of a dataset version -> (H, W, 3) uint8, by the one decoder;
    DatasetError when it is missing, undecodable or points outside the dataset."""
    from ..imageio import decode_image  # the one decoder; imported late (optional at import)

    path = (dataset_dir / rel).resolve()
    if not path.is_relative_to(dataset_dir.resolve()):  # a manifest must not point outside
        raise DatasetError(f"manifest entry {rel!r} points outside {dataset_dir}",
                           code="bad_manifest")
    try:
        return decode_image(path)
    except (FileNotFoundError, NotFound):
        raise DatasetError(f"{rel} is listed in the manifest but missing",
                           code="missing_file") from None
    except ImageRejected as e:
        raise DatasetError(f"{rel} cannot be decoded: {e}", code="bad_image") from None


def run_per_entry(work, n: int, desc: str, workers: int | None) -> None:
    """work(i) for i in range(n) with a progress bar, on `workers` threads (default: up to
    2; Pillow decodes and resizes without the GIL, so threads use both cores); stops at
    the first failure."""
    n_workers = max(1, workers if workers is not None else min(2, os.cpu_count() or 1))
    with tqdm(total=n, desc=desc, unit="img", file=sys.stderr, disable=None) as bar:
        if n_workers == 1:
            for i in range(n):
                work(i)
                bar.update()
            return
        with ThreadPoolExecutor(n_workers) as pool:
            try:
                for _ in pool.map(work, range(n)):
                    bar.update()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # stop at the first bad file
                raise


def build_cache(dataset_dir: Path, resolution: int, fit: str = "crop", *,
                workers: int | None = None) -> Path:
    """Decode, square and resize every manifest image into the packed cache; returns its path.

    Always rebuilds (use `load_packed` for build-if-missing-or-stale). Rows are
    ordered by (domain, file); labels index the sorted domain names.
    """
    _check_args(resolution, fit)
    dataset_dir = Path(dataset_dir)
    manifest, manifest_sha = _read_manifest(dataset_dir)
    entries = sorted(manifest["images"], key=lambda e: (e["domain"], e["file"]))
    if not entries:
        raise DatasetError(f"dataset {dataset_dir} has no images", code="empty_dataset")
    domains = sorted({e["domain"] for e in entries} | set(manifest.get("domains", {})))
    domain_index = {d: i for i, d in enumerate(domains)}
    n = len(entries)
    images = torch.empty((n, 3, resolution, resolution), dtype=torch.uint8)
    labels = torch.tensor([domain_index[e["domain"]] for e in entries], dtype=torch.int64)
    rows = images.numpy()
    def work(i: int) -> None:
        arr = decode_entry(dataset_dir, entries[i]["file"])  # (H, W, 3) uint8
        # (R, R, 3) uint8 -> row i of (N, 3, R, R), written through a shared numpy view
        rows[i] = square_resize(arr, resolution, fit).transpose(2, 0, 1)

    log.info("building %dpx %s cache of %s (%d images)", resolution, fit, dataset_dir, n)
    t0 = time.perf_counter()
    run_per_entry(work, n, f"cache {dataset_dir.parent.name}/{dataset_dir.name} "
                  f"{resolution}px {fit}", workers)

    st_path, js_path = cache_paths(dataset_dir, resolution, fit)
    with atomic_path(st_path) as tmp:
        save_file({"images": images, "labels": labels}, str(tmp),
                  metadata={"format": "polychrome-cache", "manifest_sha256": manifest_sha})
    # The JSON goes last: it is what marks the entry fresh.
    atomic_write_json(js_path, {
        "format": CACHE_FORMAT,
        "domains": domains,
        "files": [e["file"] for e in entries],
        "fit": fit,
        "resolution": resolution,
        "manifest_sha256": manifest_sha,
        "count": n,
    })
    log.info("built cache %s: %d images in %.1f s", st_path, n, time.perf_counter() - t0)
    return st_path


def _load_fresh(dataset_dir: Path, resolution: int, fit: str,
                manifest_sha: str) -> PackedDataset | None:
    """The cached PackedDataset, or None when missing, stale or unreadable."""
    st_path, js_path = cache_paths(dataset_dir, resolution, fit)
    try:
        meta = json.loads(js_path.read_text())
        fresh = (meta.get("format") == CACHE_FORMAT and meta.get("manifest_sha256") == manifest_sha
                 and meta.get("resolution") == resolution and meta.get("fit") == fit)
        if not fresh:
            return None
        with safe_open(str(st_path), framework="pt") as f:
            if (f.metadata() or {}).get("manifest_sha256") != manifest_sha:
                return None  # a crash between the two renames left a mismatched pair
        tensors = load_file(str(st_path))
        packed = PackedDataset(images=tensors["images"], labels=tensors["labels"],
                               domains=list(meta["domains"]), files=list(meta["files"]),
                               resolution=resolution, fit=fit)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, DatasetError) as e:
        if not isinstance(e, FileNotFoundError):
            log.warning("ignoring unreadable cache %s: %s", st_path, e)
        return None
    if packed.images.shape[2:] != (resolution, resolution):
        return None
    return packed


def load_cache_dir(dataset_dir: str | Path, resolution: int, fit: str = "crop") -> PackedDataset:
    """Load the cache of one dataset version dir, building it if missing or stale."""
    _check_args(resolution, fit)
    dataset_dir = Path(dataset_dir)
    _, manifest_sha = _read_manifest(dataset_dir)
    packed = _load_fresh(dataset_dir, resolution, fit, manifest_sha)
    if packed is not None:
        return packed
    st_path, _ = cache_paths(dataset_dir, resolution, fit)
    with _build_lock(st_path.with_suffix(".lock")):
        # Another process may have built it while we waited for the lock.
        packed = _load_fresh(dataset_dir, resolution, fit, manifest_sha)
        if packed is None:
            build_cache(dataset_dir, resolution, fit)
            packed = _load_fresh(dataset_dir, resolution, fit, manifest_sha)
    if packed is None:  # the manifest changed while we were building
        raise DatasetError(f"dataset {dataset_dir} changed while its cache was built; retry",
                           code="stale_cache")
    return packed


# -- resolving a dataset ---------------------------------------------------------------
def _resolve_on_disk(name: str, version: int | None) -> Path:
    """$HOME/datasets/<name>/<version or highest integer version>, straight from the layout."""
    base = get_settings().datasets_dir / name
    if version is None:
        versions = [int(p.name) for p in base.glob("*")
                    if p.is_dir() and (p.name.isascii() and p.name.isdigit()) and (p / "manifest.json").is_file()]
        if not versions:
            raise NotFound(f"no dataset named {name!r}")
        version = max(versions)
    path = base / str(version)
    if not (path / "manifest.json").is_file():
        raise NotFound(f"dataset {name!r} has no version {version}")
    return path


def resolve_dataset_dir(dataset: str | Path, version: int | None = None) -> Path:
    """A dataset version dir from a path, a name, or a "name:version" string."""
    if isinstance(dataset, Path) or os.sep in dataset or (Path(dataset) / "manifest.json").is_file():
        path = Path(dataset)
        if not (path / "manifest.json").is_file():
            raise NotFound(f"{path} is not a dataset version directory (no manifest.json)")
        return path
    name = dataset
    m = re.fullmatch(r"(.+):(\d+)", dataset)
    if m and version is None:
        name, version = m.group(1), int(m.group(2))
    from ..persistence.datasets import resolve_dataset

    try:
        return get_settings().stored(resolve_dataset(name, version).path)
    except NotFound:
        # A dataset laid out on disk but not indexed (tests, hand-made sets) still loads.
        return _resolve_on_disk(name, version)


def load_packed(dataset: str | Path, resolution: int, fit: str = "crop",
                version: int | None = None,
                scale: Sequence[int] | None = None) -> PackedDataset:
    """The packed cache for a dataset (name, "name:version" or version dir path).

    Builds the cache if it is missing or stale (manifest changed). fit "crops" gives a
    PackedCrops (pictures at their own size, random crops of side `resolution` taken at
    shorter sides in `scale`); "crop" / "pad" square whole pictures.
    """
    if fit == "crops":
        from .crops import load_crops_dir

        return load_crops_dir(resolve_dataset_dir(dataset, version), resolution, scale)
    return load_cache_dir(resolve_dataset_dir(dataset, version), resolution, fit)
