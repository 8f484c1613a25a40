"""Build test images in memory (bytes), for the decoder's tests and anyone's import tests.

Import from any test module as `from imagegen import make_png` (tests/ is on
sys.path because tests/conftest.py lives there).

Everything is deterministic (seeded) and tiny. Pixel content is random noise
or coloured blocks, so any flip / rotation / channel swap shows up.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "apply_orientation",
    "block_pattern",
    "encode",
    "make_16bit_png",
    "make_animated_gif",
    "make_animated_webp",
    "make_cmyk_jpeg",
    "make_exif_rotated_jpeg",
    "make_image",
    "make_image_bytes",
    "make_multipage_tiff",
    "make_palette_transparent_png",
    "make_png",
    "make_png_header_claiming",
    "make_premultiplied_tiff",
    "make_raw_png",
    "make_truncated_jpeg",
    "make_truncated_png",
    "noise",
    "undo_orientation",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ORIENTATION_TAG = 0x0112


def noise(h: int, w: int, channels: int | None = 3, seed: int = 0) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 uniform noise."""
    shape = (h, w) if channels is None else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def block_pattern(h_blocks: int = 3, w_blocks: int = 4, block: int = 8) -> np.ndarray:
    """(h_blocks*block, w_blocks*block, 3) uint8 of flat, strongly distinct colour
    blocks: survives JPEG (compare with a tolerance) and shows any flip."""
    rng = np.random.default_rng(1234)
    colours = rng.choice(np.array([0, 64, 128, 192, 255], dtype=np.uint8),
                         size=(h_blocks, w_blocks, 3))
    # Make every block unique so no symmetry can hide a wrong transform.
    colours[:, :, 0] = (np.arange(h_blocks * w_blocks).reshape(h_blocks, w_blocks)
                        * (255 // max(1, h_blocks * w_blocks - 1))).astype(np.uint8)
    return np.repeat(np.repeat(colours, block, axis=0), block, axis=1)


def apply_orientation(stored: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for pixel data `stored` (H, W, ...) tagged with an EXIF
    orientation, written from the EXIF definition (where row 0 / column 0 go),
    independently of Pillow's ImageOps."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # row 0 top, column 0 right
        3: lambda a: a[::-1, ::-1],  # row 0 bottom, column 0 right
        4: lambda a: a[::-1],  # row 0 bottom, column 0 left
        5: lambda a: a.swapaxes(0, 1),  # row 0 left, column 0 top
        6: lambda a: np.rot90(a, -1),  # row 0 right, column 0 top: 90 deg clockwise
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # row 0 right, column 0 bottom
        8: lambda a: np.rot90(a, 1),  # row 0 left, column 0 bottom: 90 deg anticlockwise
    }
    return np.ascontiguousarray(ops[orientation](stored))


def undo_orientation(display: np.ndarray, orientation: int) -> np.ndarray:
    """Pixel data to store so that a viewer honouring `orientation` shows `display`."""
    inverse = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}
    return apply_orientation(display, inverse[orientation])


def make_image(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A PIL image of any mode we care about, filled with seeded noise.

    Modes: 1, L, LA, La, P, PA, RGB, RGBA, RGBa, CMYK, I;16, I;16B, I, F."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8) * 255).convert("1")
    if mode == "P":
        return Image.fromarray(noise(h, w, 3, seed)).quantize(colors=16)
    if mode == "PA":
        im = Image.fromarray(noise(h, w, 3, seed)).quantize(colors=16).convert("PA")
        im.putalpha(Image.fromarray(noise(h, w, None, seed + 1)))
        return im
    if mode in ("I;16", "I;16B"):
        data = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        if mode == "I;16B":  # convert("I;16B") would clip to 255
            return Image.frombytes(mode, (w, h), data.astype(">u2").tobytes())
        return Image.fromarray(data)
    if mode == "I":
        return Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((h, w), dtype=np.float32))
    channels = {"L": None, "LA": 2, "La": 2, "RGB": 3, "RGBA": 4, "RGBa": 4, "CMYK": 4}[mode]
    data = noise(h, w, channels, seed)
    if mode in ("La", "RGBa"):  # premultiplied: colour never exceeds alpha
        data[..., :-1] = (data[..., :-1].astype(np.uint16) * data[..., -1:] // 255).astype(
            np.uint8)
        return Image.frombytes(mode, (w, h), data.tobytes())
    if mode == "L":
        return Image.fromarray(data)
    return Image.frombytes(mode, (w, h), data.tobytes())


def encode(im: Image.Image, fmt: str, *, orientation: int | None = None, **save_kw) -> bytes:
    """Save a PIL image to bytes; `orientation` writes an EXIF Orientation tag
    (PNG eXIf, JPEG APP1, WebP EXIF, TIFF tag)."""
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        save_kw["exif"] = exif
    buf = io.BytesIO()
    im.save(buf, fmt, **save_kw)
    return buf.getvalue()


def make_image_bytes(fmt: str, w: int = 16, h: int = 12, mode: str = "RGB", *, seed: int = 0,
                     orientation: int | None = None, **save_kw) -> bytes:
    """`make_image` saved as `fmt` (PNG, JPEG, WEBP, GIF, BMP, TIFF, or anything Pillow writes)."""
    return encode(make_image(w, h, mode, seed), fmt, orientation=orientation, **save_kw)


def make_png(w: int = 16, h: int = 12, mode: str = "RGB", *, seed: int = 0,
             orientation: int | None = None, **save_kw) -> bytes:
    return make_image_bytes("PNG", w, h, mode, seed=seed, orientation=orientation, **save_kw)


def make_exif_rotated_jpeg(orientation: int, *, h_blocks: int = 3, w_blocks: int = 4,
                           block: int = 8, quality: int = 95) -> bytes:
    """A JPEG whose *displayed* image (after its EXIF orientation) is
    block_pattern(h_blocks, w_blocks, block); the stored pixels are transformed."""
    stored = undo_orientation(block_pattern(h_blocks, w_blocks, block), orientation)
    return encode(Image.fromarray(stored), "JPEG", orientation=orientation, quality=quality,
                  subsampling=0)


def make_cmyk_jpeg(w: int = 16, h: int = 16, rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A flat-colour CMYK JPEG. Pillow writes CMYK JPEGs the way Photoshop does:
    inverted, with an Adobe APP14 marker."""
    im = Image.new("RGB", (w, h), rgb).convert("CMYK")
    data = encode(im, "JPEG", quality=95)
    assert b"Adobe" in data[:200]
    return data


def make_raw_png(width: int, height: int, *, bit_depth: int = 8, color_type: int = 2,
                 rows: bytes | None = None,
                 chunks: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """Hand-built PNG: signature, IHDR, extra `chunks` (type, data), one IDAT of
    zlib(`rows`) and IEND, all with valid CRCs. `rows` are raw scanlines, each
    with its filter byte; None -> an all-zero image of the right size."""
    def chunk(ctype: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + ctype + data + struct.pack(
            ">I", zlib.crc32(ctype + data))

    if rows is None:
        samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
        stride = (width * samples * bit_depth + 7) // 8
        rows = b"".join(b"\x00" + bytes(stride) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b"IHDR", ihdr)
            + b"".join(chunk(t, d) for t, d in chunks)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def make_png_header_claiming(w: int, h: int) -> bytes:
    """A ~60-byte PNG whose IHDR claims w x h RGB pixels, with a minimal IDAT
    (a few bytes of zlib) and IEND: a decompression-bomb header."""
    return make_raw_png(w, h, rows=b"\x00\x00\x00\x00")


def make_16bit_png(w: int = 8, h: int = 4, *, channels: int = 1,
                   values: np.ndarray | None = None, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """A 16-bit PNG (grey if channels == 1, RGB if 3) and its (H, W[, C]) uint16 samples."""
    if values is None:
        rng = np.random.default_rng(seed)
        shape = (h, w) if channels == 1 else (h, w, channels)
        values = rng.integers(0, 65536, shape, dtype=np.uint16)
    values = np.asarray(values, dtype=np.uint16)
    h, w = values.shape[:2]
    big_endian = values.astype(">u2").reshape(h, -1).tobytes()
    stride = len(big_endian) // h
    rows = b"".join(b"\x00" + big_endian[i * stride:(i + 1) * stride] for i in range(h))
    data = make_raw_png(w, h, bit_depth=16, color_type=0 if channels == 1 else 2, rows=rows)
    return data, values


def make_palette_transparent_png(w: int = 8, h: int = 8) -> tuple[bytes, np.ndarray]:
    """A P-mode PNG with a tRNS chunk, and its expected (H, W, 4) RGBA.

    Index 0 red fully transparent, 1 green half transparent (alpha 128),
    2 blue opaque; pixels cycle 0, 1, 2."""
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    alphas = [0, 128, 255]
    idx = (np.arange(h * w).reshape(h, w) % 3).astype(np.uint8)
    im = Image.frombytes("P", (w, h), idx.tobytes())
    im.putpalette([c for rgb in palette for c in rgb])
    data = encode(im, "PNG", transparency=bytes(alphas))
    expected = np.array([[*palette[i], alphas[i]] for i in range(3)], dtype=np.uint8)[idx]
    return data, expected


def make_truncated_png(w: int = 32, h: int = 32, keep: float = 0.6) -> bytes:
    """A noise PNG cut to `keep` of its length (inside IDAT)."""
    full = make_png(w, h)
    return full[: int(len(full) * keep)]


def make_truncated_jpeg(w: int = 32, h: int = 32, keep: float = 0.6, *,
                        progressive: bool = False) -> bytes:
    """A noise JPEG cut to `keep` of its length (inside the entropy-coded scan)."""
    full = encode(make_image(w, h), "JPEG", quality=90, progressive=progressive)
    return full[: int(len(full) * keep)]


def make_premultiplied_tiff(mode: str = "RGBA", colour: tuple[int, ...] = (100, 50, 0, 128)
                            ) -> bytes:
    """A flat 2x2 TIFF with *associated* (premultiplied) alpha: `mode` RGBA or LA,
    `colour` the premultiplied samples. Pillow always writes ExtraSamples=2
    (unassociated), so the tag's value is patched to 1."""
    data = encode(Image.new(mode, (2, 2), colour), "TIFF")
    entry = struct.pack("<HHII", 338, 3, 1, 2)  # ExtraSamples, SHORT, count 1, value 2
    assert data.count(entry) == 1
    return data.replace(entry, struct.pack("<HHII", 338, 3, 1, 1))


def _frames(w: int, h: int, n: int) -> list[Image.Image]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    return [Image.new("RGB", (w, h), colours[i % len(colours)]) for i in range(n)]


def make_animated_gif(w: int = 8, h: int = 8, n: int = 3) -> bytes:
    """Frames are flat red, green, blue, ...: the first frame is red."""
    frames = [f.quantize(colors=4) for f in _frames(w, h, n)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def make_animated_webp(w: int = 8, h: int = 8, n: int = 3) -> bytes:
    """Lossless animated WebP; the first frame is flat red."""
    frames = _frames(w, h, n)
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50,
                  lossless=True)


def make_multipage_tiff(w: int = 8, h: int = 8, n: int = 3) -> bytes:
    """Multi-page TIFF; page 0 is flat red and pages differ in size."""
    frames = _frames(w, h, n)
    frames[1:] = [f.resize((w + 2 * (i + 1), h)) for i, f in enumerate(frames[1:])]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
