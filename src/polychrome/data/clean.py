"""Cleaning at import: pixel hashes, perceptual hashes, de-duplication, safe names.

Exact duplicates share the sha256 of their normalised pixels. Near duplicates
(re-encoded, re-scaled, a few pixels touched) are found with a 64-bit DCT
perceptual hash (pHash): grey 32x32 thumbnail -> 2-D DCT-II -> the 8x8 lowest
frequencies -> one bit per coefficient, set when above their median. Because the
pHash is grey and square, two candidates must also agree on aspect ratio and on an
8x8 colour thumbnail, so a red and a blue version of the same drawing (common in
emoji sets) are both kept.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

PHASH_SIZE = 32  # side of the grey thumbnail the DCT runs on
PHASH_LOW = 8  # keep the PHASH_LOW x PHASH_LOW lowest frequencies -> 64 bits
NEAR_DUP_MAX_DISTANCE = 4  # Hamming distance (of 64 bits) still called a duplicate
NEAR_DUP_MAX_COLOUR_DIFF = 12.0  # mean |diff| of 8x8 RGB thumbnails, in 0..255 levels
NEAR_DUP_MAX_ASPECT_DIFF = 0.1  # relative difference of width/height


def pixel_sha256(arr: np.ndarray) -> str:
    """sha256 of shape + raw pixels, so equal pixels from different files match.

    arr: (H, W, C) uint8.
    """
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # normalised pixels
    phash: int  # 64-bit DCT perceptual hash
    aspect: float  # width / height
    thumb: np.ndarray  # (8, 8, 3) float32 colour thumbnail, 0..255

    @property
    def phash_hex(self) -> str:
        return f"{self.phash:016x}"


def _dct_matrix(n: int, keep: int) -> np.ndarray:
    """Rows 0..keep-1 of the orthonormal DCT-II matrix of size n: (keep, n) float32."""
    k = np.arange(keep)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


# Only the lowest 8x8 frequencies are needed: two small matmuls beat a full 2-D FFT.
_DCT = _dct_matrix(PHASH_SIZE, PHASH_LOW)


def fingerprint(arr: np.ndarray) -> Fingerprint:
    """Hashes of one decoded image. arr: (H, W, 3) uint8 RGB."""
    h, w = arr.shape[:2]
    # Pillow antialiases when shrinking, so the thumbnail averages rather than samples.
    small = Image.fromarray(arr).resize((PHASH_SIZE, PHASH_SIZE), Image.Resampling.BILINEAR)
    grey = np.asarray(small.convert("L"), dtype=np.float32)  # (32, 32), BT.601 luma
    thumb = np.asarray(small.resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    return Fingerprint(sha256=pixel_sha256(arr), phash=phash_from_grey(grey), aspect=w / h,
                       thumb=thumb)


def phash_from_grey(grey: np.ndarray) -> int:
    """64-bit pHash of a (32, 32) grey thumbnail; the most significant bit is the DC term."""
    coeffs = (_DCT @ grey.astype(np.float32) @ _DCT.T).ravel()  # (64,) lowest frequencies
    # median of the 63 AC terms (the DC term only says how bright the image is)
    median = np.partition(coeffs[1:], 31)[31]
    bits = np.packbits(coeffs > median)  # 8 bytes, big-endian bit order
    return int.from_bytes(bits.tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


class Deduper:
    """Remembers kept images; `match` says which kept image a new one duplicates.

    Feed images in the order that decides who survives (sorted source names).
    Near-duplicate search is one vectorised XOR + popcount over all kept hashes.
    """

    def __init__(self, max_distance: int = NEAR_DUP_MAX_DISTANCE,
                 max_colour_diff: float = NEAR_DUP_MAX_COLOUR_DIFF,
                 max_aspect_diff: float = NEAR_DUP_MAX_ASPECT_DIFF):
        self.max_distance = max_distance
        self.max_colour_diff = max_colour_diff
        self.max_aspect_diff = max_aspect_diff
        self._by_sha: dict[str, int] = {}
        self._n = 0
        self._phash = np.zeros(64, dtype=np.uint64)
        self._aspect = np.zeros(64, dtype=np.float64)
        self._thumb = np.zeros((64, 8, 8, 3), dtype=np.float32)

    def match(self, fp: Fingerprint) -> tuple[int, str] | None:
        """(index of the kept image, "exact" | "near (distance d)") or None if new."""
        if fp.sha256 in self._by_sha:
            return self._by_sha[fp.sha256], "exact"
        if self._n == 0:
            return None
        n = self._n
        dist = _popcount(self._phash[:n] ^ np.uint64(fp.phash))
        (cand,) = np.nonzero(dist <= self.max_distance)
        if cand.size == 0:
            return None
        aspect_ok = np.abs(self._aspect[cand] / fp.aspect - 1.0) <= self.max_aspect_diff
        colour = np.abs(self._thumb[cand] - fp.thumb).mean(axis=(1, 2, 3))
        cand = cand[aspect_ok & (colour <= self.max_colour_diff)]
        if cand.size == 0:
            return None
        best = int(cand[np.argmin(dist[cand])])
        return best, f"near (distance {int(dist[best])})"

    def add(self, fp: Fingerprint) -> int:
        """Keep `fp`; returns its index."""
        if self._n == len(self._phash):  # grow by doubling: amortised O(1) appends
            self._phash = np.concatenate([self._phash, np.zeros_like(self._phash)])
            self._aspect = np.concatenate([self._aspect, np.zeros_like(self._aspect)])
            self._thumb = np.concatenate([self._thumb, np.zeros_like(self._thumb)])
        i = self._n
        self._phash[i] = fp.phash
        self._aspect[i] = fp.aspect
        self._thumb[i] = fp.thumb
        self._by_sha.setdefault(fp.sha256, i)
        self._n += 1
        return i


# -- names: mapping source paths onto the dataset layout -------------------------------
DEFAULT_DOMAIN = "default"
_SEPARATORS = re.compile(r"[/\\\x00-\x1f\x7f]")


def safe_component(name: str, fallback: str = "_", max_bytes: int = 120) -> str:
    """A name usable as one path component: separators and control characters become
    "_"; ".", ".." and leading dots cannot survive (they would be hidden or escape)."""
    s = _SEPARATORS.sub("_", unicodedata.normalize("NFC", name)).strip()
    if s.startswith("."):
        s = "_" + s[1:]
    while len(s.encode("utf-8")) > max_bytes:  # filesystems cap a name at 255 bytes
        s = s[:-1]
    return s or fallback


def wrapper_depth(paths: Sequence[tuple[str, ...]]) -> int:
    """1 if one top-level folder wraps everything and holds style folders, else 0.

    `emoji/noto/x.png` -> the root is `emoji`; but `noto/x.png` alone stays the
    style `noto` (unwrapping it would lose the style name).
    """
    if not paths:
        return 0
    tops = {p[0] for p in paths}
    if len(tops) == 1 and all(len(p) >= 2 for p in paths) and any(len(p) >= 3 for p in paths):
        return 1
    return 0


def domain_and_stem(parts: tuple[str, ...], depth: int) -> tuple[str, str]:
    """(domain, sanitised file stem) of a member after stripping `depth` wrapper folders.

    Only the first level below the root names the domain; files directly in the
    root go to DEFAULT_DOMAIN.
    """
    rel = parts[depth:]
    domain = DEFAULT_DOMAIN if len(rel) <= 1 else safe_component(rel[0])
    stem = rel[-1].rsplit(".", 1)[0] if "." in rel[-1] else rel[-1]
    return domain, safe_component(stem, fallback="image")


def unique_stem(stem: str, taken: set[str]) -> str:
    """`stem`, or `stem_1`, `stem_2`, ... — compared case-insensitively, as on macOS."""
    candidate, k = stem, 0
    while candidate.casefold() in taken:
        k += 1
        candidate = f"{stem}_{k}"
    taken.add(candidate.casefold())
    return candidate
