"""The safe image decoder: the one door every image comes through.

bytes / path / file object -> (H, W, 3|4) uint8 numpy array, or ImageRejected
with a reason code ("unsupported", "corrupt", "too_large").

Order of checks, and why:
1. the format is sniffed from magic bytes (never the file name), and Pillow
   may only use that one plugin, so no exotic decoder ever sees our input;
2. the header is parsed lazily and width*height is checked against the cap
   before any pixel buffer exists (a 50k x 50k PNG header costs nothing);
3. PNG chunks are CRC-verified to IEND, then the image is fully loaded with
   ImageFile.LOAD_TRUNCATED_IMAGES False, so a truncated file is an error,
   never a partial image with grey fill;
4. EXIF orientation is applied, then every mode is mapped deliberately to
   8-bit RGB or RGBA (_normalise_mode, _to_array): palette / colour-key
   transparency and premultiplied alpha become straight RGBA, CMYK and
   ICC-tagged RGB go to sRGB, 16-bit is scaled (>> 8), never clipped.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFile, ImageOps, PngImagePlugin

from polychrome import _pngchunks
from polychrome.errors import ImageRejected, NotFound, PolychromeError
from polychrome.settings import get_settings

try:  # LittleCMS is optional in Pillow builds; without it colours are converted naively.
    from PIL import ImageCms

    _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
except Exception:  # pragma: no cover - depends on the Pillow build
    ImageCms = None  # type: ignore[assignment]
    _SRGB = None

log = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_FORMATS",
    "ImageInfo",
    "decode_image",
    "encode_png",
    "from_tensor",
    "probe_image",
    "read_png_metadata",
    "sniff_format",
    "to_tensor",
]

ALLOWED_FORMATS: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"})

# Bytes needed by sniff_format (BMP's DIB header size sits at offset 14..17).
SNIFF_BYTES = 32

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (_pngchunks.PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)
# "BM" alone is too weak a signature (any text may start with it): also
# require one of the DIB header sizes that real BMP files use.
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


@dataclass(frozen=True)
class ImageInfo:
    """What the header says. width/height are those of the array decode_image
    returns, i.e. after EXIF orientation (5..8 swap the stored axes)."""

    format: str  # one of ALLOWED_FORMATS
    width: int
    height: int
    mode: str  # Pillow mode as stored, e.g. "RGB", "P", "I;16", "CMYK"
    orientation: int = 1  # EXIF orientation 1..8
    has_alpha: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff_format(head: bytes) -> str | None:
    """Format name from the first bytes of a file (>= SNIFF_BYTES is plenty);
    None when it is not one of ALLOWED_FORMATS."""
    for sig, name in _SIGNATURES:
        if head.startswith(sig):
            return name
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if len(head) >= 18 and head[:2] == b"BM":
        (dib_size,) = struct.unpack_from("<I", head, 14)
        if dib_size in _BMP_DIB_SIZES:
            return "BMP"
    return None


def _looks_truncated(head: bytes) -> bool:
    """True for an empty file or a proper prefix of a known signature."""
    if len(head) == 0:
        return True
    sigs = [s for s, _ in _SIGNATURES] + [b"RIFF", b"BM"]
    return any(len(head) < len(s) and s.startswith(head) for s in sigs) or (
        (head[:4] == b"RIFF" and len(head) < 12) or (head[:2] == b"BM" and len(head) < 18)
    )


@contextmanager
def _open_source(source: bytes | str | os.PathLike | BinaryIO) -> Iterator[tuple[BinaryIO, str]]:
    """Yield a seekable binary stream positioned at 0 and the sniffed format.

    Paths are streamed, not read whole; a file object is read from its
    current position (into memory if it cannot seek)."""
    if isinstance(source, bytes | bytearray | memoryview):
        stream: BinaryIO = io.BytesIO(bytes(source))
        owned = True
    elif isinstance(source, str | os.PathLike):
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFound(f"no such file: {os.fspath(source)}") from None
        except OSError as e:
            raise PolychromeError(
                f"cannot read {os.fspath(source)}: {e.strerror}", code="unreadable"
            ) from None
        owned = True
    elif hasattr(source, "read"):
        # Pillow seeks to 0, so copy anything not starting at 0 (uploads rarely do).
        seekable = getattr(source, "seekable", lambda: False)()
        if seekable and source.tell() == 0:
            stream, owned = source, False
        else:
            stream, owned = io.BytesIO(source.read()), True
    else:
        raise TypeError(f"expected bytes, a path or a binary file, got {type(source).__name__}")
    try:
        head = stream.read(SNIFF_BYTES)
        stream.seek(0)
        fmt = sniff_format(head)
        if fmt is None:
            if _looks_truncated(head):
                raise ImageRejected("file is empty or truncated inside its signature",
                                    code="corrupt")
            raise ImageRejected(
                "not a supported image (allowed: " + ", ".join(sorted(ALLOWED_FORMATS)) + ")",
                code="unsupported",
            )
        yield stream, fmt
    finally:
        if owned:
            stream.close()


def _effective_cap(max_pixels: int | None) -> int:
    cap = get_settings().max_pixels if max_pixels is None else int(max_pixels)
    # Pillow warns (DecompressionBombWarning) above MAX_IMAGE_PIXELS; the spec
    # makes that warning a rejection, so our cap never exceeds Pillow's.
    if Image.MAX_IMAGE_PIXELS is not None:
        cap = min(cap, int(Image.MAX_IMAGE_PIXELS))
    return cap


def _check_size(size: tuple[int, int], cap: int) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageRejected(f"invalid image size {w}x{h}", code="corrupt")
    if w * h > cap:
        raise ImageRejected(
            f"image is {w}x{h} = {w * h:,} pixels, over the limit of {cap:,}", code="too_large"
        )


@contextmanager
def _pillow_errors(fmt: str) -> Iterator[None]:
    """Map whatever Pillow raises on hostile input to ImageRejected.

    Only Pillow calls run inside this: a malformed file can make a plugin
    raise nearly anything (struct.error, IndexError, ZeroDivisionError...)."""
    try:
        yield
    except ImageRejected:
        raise
    except Image.DecompressionBombError as e:
        raise ImageRejected(f"{fmt} image too large: {e}", code="too_large") from None
    except MemoryError:
        raise ImageRejected(f"{fmt} image too large to decode in memory",
                            code="too_large") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected(f"has a {fmt} signature but an unreadable header",
                            code="corrupt") from None
    except Exception as e:
        log.debug("decoder rejected %s: %r", fmt, e)
        raise ImageRejected(f"corrupt or truncated {fmt} file: {e}", code="corrupt") from None


def _open(stream: BinaryIO, fmt: str) -> ImageFile.ImageFile:
    stream.seek(0)
    with _pillow_errors(fmt):
        im = Image.open(stream, formats=[fmt])  # lazy: parses the header only
    return im


def _orientation(im: Image.Image) -> int:
    # The base-class getexif reads only what the header already gave us;
    # PngImageFile.getexif would decode all pixels to look for a late eXIf.
    try:
        value = Image.Image.getexif(im).get(ExifTags.Base.Orientation, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a broken EXIF block must not reject good pixels
        return 1


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def probe_image(
    source: bytes | str | os.PathLike | BinaryIO, *, max_pixels: int | None = None
) -> ImageInfo:
    """Format, size and mode from the header only (no pixel is decoded).

    Same rejections as decode_image for format and size; a file truncated
    after its header passes probe_image and is rejected by decode_image."""
    cap = _effective_cap(max_pixels)
    with _open_source(source) as (stream, fmt), _open(stream, fmt) as im:
        _check_size(im.size, cap)
        orientation = _orientation(im)
        w, h = im.size
        # 5..8 swap the axes; Pillow's TIFF plugin already reports the
        # oriented size (it keeps the stored one as its tile size).
        if orientation >= 5 and fmt != "TIFF":
            w, h = h, w
        return ImageInfo(fmt, w, h, im.mode, orientation, _has_alpha(im))


def decode_image(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    max_pixels: int | None = None,
    keep_alpha: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Decode the first frame/page of an allowed image.

    Returns (H, W, 3) uint8 RGB, or (H, W, 4) uint8 RGBA (straight alpha) when
    keep_alpha and the image has alpha. Without keep_alpha, alpha is composited
    on `background` (RGB 0..255). max_pixels None -> Settings.max_pixels.
    Raises ImageRejected(code in {"unsupported", "corrupt", "too_large"}).
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone flipped Pillow's global: partial images would pass silently.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    bg = tuple(int(c) for c in background)
    if len(bg) != 3 or not all(0 <= c <= 255 for c in bg):
        raise ValueError(f"background must be 3 ints in 0..255, got {background!r}")
    cap = _effective_cap(max_pixels)
    with _open_source(source) as (stream, fmt), _open(stream, fmt) as im:
        _check_size(im.size, cap)  # before a single pixel is allocated
        if fmt == "PNG":
            for _ in _pngchunks.iter_chunks(stream, verify_all=True):  # CRCs, structure, IEND
                pass
        with _pillow_errors(fmt):
            im.load()  # ImageFile.load seeks to the image data itself
            # GIF frames may enlarge the canvas while loading.
            _check_size(im.size, cap)
            ImageOps.exif_transpose(im, in_place=True)
            norm = _normalise_mode(im)
        return _to_array(norm, keep_alpha=keep_alpha, background=bg)


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Any loaded mode -> "RGB", "RGBA" or one of _HIGH_BIT_MODES (left for numpy).

    convert("RGBA") handles palette alpha (tRNS), colour keys of L / RGB and
    premultiplied RGBa / La (it un-premultiplies); CMYK from Adobe JPEGs is
    already un-inverted by the JPEG plugin."""
    if im.mode in _HIGH_BIT_MODES:
        return im
    if im.mode == "La":  # Pillow converts La only to LA (un-premultiplying)
        im = im.convert("LA")
    if _has_alpha(im):
        # An RGBA image with a "transparency" key still needs convert() to apply it.
        return im if im.mode == "RGBA" and "transparency" not in im.info else im.convert("RGBA")
    im = _icc_to_srgb(im)
    return im if im.mode == "RGB" else im.convert("RGB")  # convert() would copy


def _icc_to_srgb(im: Image.Image) -> Image.Image:
    """Apply an embedded ICC profile (RGB or CMYK) so colours match a browser's."""
    icc = im.info.get("icc_profile")
    if not icc or ImageCms is None or im.mode not in ("RGB", "CMYK"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGB")
        return out if out is not None else im
    except Exception as e:  # a broken profile is common; fall back to naive conversion
        log.debug("ignoring unusable ICC profile: %r", e)
        return im


def _high_bit_to_l(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """I;16* / I / F -> ((H, W) uint8, alpha (H, W) uint8 or None).

    16-bit data is scaled (>> 8), never clipped. "I" holding 0..65535 is
    treated as 16-bit; other integer or float ranges are stretched min..max,
    except float already in [0, 1], which is scaled by 255."""
    raw = np.asarray(im)
    alpha = None
    trns = im.info.get("transparency")
    if isinstance(trns, int):  # grey tRNS key, in the same units as the samples
        alpha = np.where(raw == trns, 0, 255).astype(np.uint8)
    if im.mode.startswith("I;16"):
        return (raw.astype(np.uint16) >> 8).astype(np.uint8), alpha
    data = np.nan_to_num(raw.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if im.mode == "I" and lo >= 0 and hi <= 65535:
        out = data.astype(np.uint32) >> 8
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        out = np.rint(data * 255.0)
    elif hi > lo:
        out = np.rint((data - lo) * (255.0 / (hi - lo)))
    else:
        out = np.zeros_like(data)
    return out.astype(np.uint8), alpha


def _to_array(im: Image.Image, *, keep_alpha: bool, background: tuple[int, ...]) -> np.ndarray:
    """Image from _normalise_mode -> (H, W, 3|4) uint8."""
    if im.mode in _HIGH_BIT_MODES:
        grey, alpha = _high_bit_to_l(im)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        if alpha is None:
            return rgb
        rgba = np.dstack([rgb, alpha])
    elif im.mode == "RGBA":
        rgba = np.asarray(im)
    else:
        return np.ascontiguousarray(np.asarray(im), dtype=np.uint8)
    if keep_alpha:
        return np.ascontiguousarray(rgba, dtype=np.uint8)
    return _composite(rgba, background)


def _composite(rgba: np.ndarray, background: tuple[int, ...]) -> np.ndarray:
    """(H, W, 4) uint8 straight alpha over an opaque colour -> (H, W, 3) uint8."""
    a = rgba[:, :, 3:4].astype(np.uint32)
    bg = np.asarray(background, dtype=np.uint32).reshape(1, 1, 3)
    out = (rgba[:, :, :3].astype(np.uint32) * a + bg * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def encode_png(
    arr: np.ndarray, metadata: Mapping[str, str] | None = None, *, compress_level: int = 6
) -> bytes:
    """(H, W, 3|4) or (H, W) uint8 -> PNG bytes; metadata as tEXt (latin-1) or
    iTXt (anything else) chunks. Deterministic: no timestamps are written."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"encode_png needs (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"encode_png got an empty image {arr.shape}")
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        key, value = str(key), str(value)
        if not 1 <= len(key) <= 79 or not key.isprintable():
            raise ValueError(f"PNG metadata key must be 1..79 printable chars: {key!r}")
        try:
            key.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"PNG metadata key must be latin-1: {key!r}") from None
        info.add_text(key, value)  # Pillow switches to iTXt when value is not latin-1
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(
        buf, "PNG", pnginfo=info, compress_level=int(compress_level)
    )
    return buf.getvalue()


def read_png_metadata(source: bytes | str | os.PathLike | BinaryIO) -> dict[str, str]:
    """Text chunks (tEXt, zTXt, iTXt) of a PNG, without decoding its pixels.

    Raises ImageRejected("unsupported") for a non-PNG, ("corrupt") for bad chunks."""
    out: dict[str, str] = {}
    with _open_source(source) as (stream, fmt):
        if fmt != "PNG":
            raise ImageRejected(f"expected a PNG, got {fmt}", code="unsupported")
        for ctype, data in _pngchunks.iter_chunks(stream, verify_all=False,
                                                  keep=_pngchunks.TEXT_CHUNKS):
            if data is None or ctype not in _pngchunks.TEXT_CHUNKS:
                continue
            try:
                key, value = _pngchunks.parse_text_chunk(ctype, data)
            except (ValueError, IndexError, zlib.error, UnicodeDecodeError) as e:
                raise ImageRejected(f"corrupt PNG {ctype.decode()} chunk: {e}",
                                    code="corrupt") from None
            out[key] = value
    return out


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [-1, 1]; also (H, W) -> (1, H, W)
    and a batch (B, H, W, C) -> (B, C, H, W)."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"to_tensor needs uint8, got {arr.dtype}")
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # decoded pictures are read-only; torch wants to own one
        arr = arr.copy()
    t = torch.from_numpy(arr)
    if t.ndim == 2:
        t = t.unsqueeze(-1)
    if t.ndim == 3:
        t = t.permute(2, 0, 1)
    elif t.ndim == 4:
        t = t.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"to_tensor needs (H, W[, C]) or (B, H, W, C), got {arr.shape}")
    return t.float().div(127.5).sub(1.0).contiguous()


def from_tensor(t: torch.Tensor) -> np.ndarray:
    """float (C, H, W) or (B, C, H, W) in [-1, 1] (any device) -> uint8 (H, W, C)
    or (B, H, W, C); values are clamped to [-1, 1] and rounded to nearest."""
    if t.ndim not in (3, 4):
        raise ValueError(f"from_tensor needs (C, H, W) or (B, C, H, W), got {tuple(t.shape)}")
    # one float copy, then in place: a 12-megapixel picture is 144 MB per float temporary
    x = t.detach().to("cpu", torch.float32, copy=True)
    x.clamp_(-1.0, 1.0).add_(1.0).mul_(127.5).round_()
    x = x.to(torch.uint8)
    x = x.permute(1, 2, 0) if x.ndim == 3 else x.permute(0, 2, 3, 1)
    return np.ascontiguousarray(x.numpy())
