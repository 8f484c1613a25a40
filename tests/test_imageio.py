"""The safe decoder: formats, rejections, limits, orientation, modes, PNG metadata, tensors."""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from imagegen import (
    apply_orientation,
    block_pattern,
    encode,
    make_16bit_png,
    make_animated_gif,
    make_animated_webp,
    make_cmyk_jpeg,
    make_exif_rotated_jpeg,
    make_image,
    make_image_bytes,
    make_multipage_tiff,
    make_palette_transparent_png,
    make_png,
    make_png_header_claiming,
    make_premultiplied_tiff,
    make_raw_png,
    make_truncated_jpeg,
    make_truncated_png,
    noise,
)
from polychrome.errors import ImageRejected, NotFound, PolychromeError
from polychrome.imageio import (
    ALLOWED_FORMATS,
    decode_image,
    encode_png,
    from_tensor,
    probe_image,
    read_png_metadata,
    sniff_format,
    to_tensor,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF EXIF chatter

LOSSLESS = {
    "PNG": {},
    "WEBP": {"lossless": True},
    "GIF": {},
    "BMP": {},
    "TIFF": {},
}


def rejected(source, code: str, **kw) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_image(source, **kw)
    assert info.value.code == code, str(info.value)
    assert str(info.value) and "\n" not in str(info.value)
    return info.value


# --- sniffing and round trips -------------------------------------------------------


def test_allowed_formats_and_sniffing():
    assert ALLOWED_FORMATS == {"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"}
    rgb = make_image(6, 5)
    for fmt in ALLOWED_FORMATS:
        assert sniff_format(encode(rgb, fmt)[:32]) == fmt
    assert sniff_format(b"MM\x00+" + bytes(12)) == "TIFF"  # BigTIFF
    for head in [b"", b"BM is not a bitmap, just text", b"RIFF\x00\x00\x00\x00WAVEfmt ",
                 b"%PDF-1.7\n", b"<svg xmlns=", b"\x00\x00\x00\x0cjP  ", b"GIF88a"]:
        assert sniff_format(head) is None, head


@pytest.mark.parametrize("fmt", sorted(LOSSLESS))
def test_lossless_round_trip_bytes_path_and_file(fmt, tmp_path):
    rgb = noise(12, 17, seed=3)
    data = encode(Image.fromarray(rgb), fmt, **LOSSLESS[fmt])  # GIF: 12*17 < 256 colours
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    for source in (data, bytearray(data), path, str(path), io.BytesIO(data)):
        out = decode_image(source)
        assert out.dtype == np.uint8 and out.shape == (12, 17, 3)
        np.testing.assert_array_equal(out, rgb)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(decode_image(f), rgb)
    info = probe_image(path)
    assert (info.format, info.width, info.height) == (fmt, 17, 12)


@pytest.mark.parametrize("fmt,kw", [("JPEG", {"quality": 95}), ("WEBP", {"quality": 95})])
def test_lossy_round_trip(fmt, kw):
    want = block_pattern(2, 3, 16)
    out = decode_image(encode(Image.fromarray(want), fmt, **kw))
    assert out.shape == want.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - want)
    assert err.mean() < 4
    # Chroma subsampling smears block edges; block centres must be close.
    assert err[4::16, 4::16].max() <= 12 and err[11::16, 11::16].max() <= 12


def test_file_objects_read_from_their_position_and_unseekable(tmp_path):
    data = make_png(5, 4)
    want = decode_image(data)
    buf = io.BytesIO(b"junk" + data)
    buf.seek(4)
    np.testing.assert_array_equal(decode_image(buf), want)

    class Pipe(io.RawIOBase):  # a stream that cannot seek, like a socket
        def __init__(self, payload: bytes):
            self._b = io.BytesIO(payload)

        def readable(self):
            return True

        def readinto(self, b):
            n = self._b.readinto(b)
            return n

    np.testing.assert_array_equal(decode_image(io.BufferedReader(Pipe(data))), want)


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(NotFound):
        decode_image(tmp_path / "nope.png")
    with pytest.raises(PolychromeError) as info:
        decode_image(tmp_path)  # a directory
    assert not isinstance(info.value, ImageRejected)
    with pytest.raises(TypeError):
        decode_image(12345)


# --- rejections -------------------------------------------------------------------------


def test_non_images_are_unsupported_whatever_their_name(tmp_path):
    sources = {
        "text": b"hello, I am not a picture\n" * 4,
        "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9"/>',
        "html": b"<!doctype html><img src=x>",
        "zip": b"PK\x03\x04" + bytes(40),
        # Formats Pillow can decode but that are not allowed must still be refused.
        "ico": encode(make_image(16, 16), "ICO"),
        "pcx": encode(make_image(8, 8), "PCX"),
        "tga": encode(make_image(8, 8), "TGA"),
        "jpeg2000": encode(make_image(8, 8), "JPEG2000"),
    }
    for name, data in sources.items():
        err = rejected(data, "unsupported")
        assert "PNG" in str(err), name
        with pytest.raises(ImageRejected) as info:
            probe_image(data)
        assert info.value.code == "unsupported"
    fake = tmp_path / "photo.png"  # the extension lies; magic bytes decide
    fake.write_text("definitely not a png")
    rejected(fake, "unsupported")
    # ...and a real PNG with a misleading name decodes fine.
    real = tmp_path / "notes.txt"
    real.write_bytes(make_png(4, 3))
    assert decode_image(real).shape == (3, 4, 3)


def test_empty_and_cut_signatures_are_corrupt():
    rejected(b"", "corrupt")
    rejected(b"\x89PN", "corrupt")
    rejected(b"\xff\xd8", "corrupt")


def test_truncated_png_and_jpeg_are_corrupt():
    for keep in (0.1, 0.3, 0.6, 0.9):
        rejected(make_truncated_png(keep=keep), "corrupt")
        rejected(make_truncated_jpeg(keep=keep), "corrupt")
        rejected(make_truncated_jpeg(keep=keep, progressive=True), "corrupt")


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}),
                                    ("WEBP", {"lossless": True}), ("WEBP", {}), ("GIF", {}),
                                    ("BMP", {}), ("TIFF", {}),
                                    ("TIFF", {"compression": "tiff_lzw"})])
def test_truncation_never_yields_a_partial_image(fmt, kw):
    """Cut the file at many points: each cut is either rejected as corrupt or
    decodes to exactly the full image (e.g. only a JPEG's final EOI or a GIF's
    trailer was lost) — never a partially filled picture."""
    im = Image.fromarray(noise(24, 20, seed=7)).quantize(64) if fmt == "GIF" else \
        Image.fromarray(noise(24, 20, seed=7))
    data = encode(im, fmt, **kw)
    full = decode_image(data)
    cuts = sorted({*range(1, 40), *np.linspace(40, len(data) - 16, 25).astype(int)})
    outcomes = set()
    for cut in cuts:
        try:
            out = decode_image(data[: len(data) - cut])
        except ImageRejected as e:
            assert e.code == "corrupt", (cut, e.code, str(e))
            outcomes.add("corrupt")
        else:
            assert cut <= 2, f"{fmt}: decoded after losing {cut} bytes"
            np.testing.assert_array_equal(out, full)
    assert outcomes == {"corrupt"}


def test_garbage_after_png_signature_and_bad_crc_are_corrupt():
    rng = np.random.default_rng(0)
    for n in (0, 5, 40, 400):
        rejected(b"\x89PNG\r\n\x1a\n" + rng.bytes(n), "corrupt")
    good = bytearray(make_png(8, 8))
    idat = good.index(b"IDAT")
    good[idat + 10] ^= 0xFF  # a flipped bit inside compressed data: CRC catches it
    rejected(bytes(good), "corrupt")
    # Chunks after IEND are allowed to be missing, but IEND itself is required.
    png = make_png(8, 8)
    rejected(png[: png.index(b"IEND") - 4], "corrupt")


def test_huge_chunk_lengths_cost_no_memory():
    # A private chunk and a text chunk each claiming ~2 GiB, in a 100-byte file.
    for ctype in (b"prVt", b"tEXt"):
        png = make_png(4, 4)
        ihdr_end = 8 + 25
        fake = png[:ihdr_end] + struct.pack(">I", 0x7FFFFFF0) + ctype + b"x" * 20 + png[ihdr_end:]
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(ImageRejected) as info:
            decode_image(fake)
        assert info.value.code == "corrupt"
        with pytest.raises(ImageRejected):
            read_png_metadata(fake)
        assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024 < 64


def test_ztxt_bomb_in_metadata_is_too_large():
    ztxt = b"bomb\x00\x00" + zlib.compress(b"A" * (8 << 20), 9)  # 8 MiB -> ~8 KiB
    png = make_raw_png(2, 2, chunks=[(b"zTXt", ztxt)])
    with pytest.raises(ImageRejected) as info:
        read_png_metadata(png)
    assert info.value.code == "too_large"
    # Pillow's own text limit refuses it at open time too: a rejection, not a crash.
    with pytest.raises(ImageRejected):
        decode_image(png)
    small = make_raw_png(2, 2, chunks=[(b"zTXt", b"c\x00\x00" + zlib.compress(b"ok"))])
    assert read_png_metadata(small) == {"c": "ok"}


# --- size limits ------------------------------------------------------------------------


def test_header_bomb_50k_is_rejected_fast_without_allocating():
    bomb = make_png_header_claiming(50_000, 50_000)
    assert len(bomb) < 100
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.perf_counter()
    err = rejected(bomb, "too_large")
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, elapsed
    assert "50000" in str(err).replace(",", "")
    with pytest.raises(ImageRejected) as info:
        probe_image(bomb)
    assert info.value.code == "too_large"
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mib < 64, grown_mib  # the pixels alone would be 7.5 GB


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_our_cap_runs_before_any_pixel_is_decoded():
    # 8000 x 6000 = 48 Mpx: over our 40 Mpx default, under Pillow's own bomb
    # limit. The IDAT is a stub, so decoding would fail as "corrupt": getting
    # "too_large" proves the cap is checked from the header first.
    rejected(make_png_header_claiming(8000, 6000), "too_large")
    assert probe_image(make_png_header_claiming(6000, 6000)).pixels == 36_000_000
    # A header Pillow itself would only warn about is a rejection too, even
    # when the caller allows more.
    rejected(make_png_header_claiming(10_000, 10_000), "too_large", max_pixels=10**9)


def test_max_pixels_argument():
    data = make_png(16, 16)
    assert decode_image(data, max_pixels=256).shape == (16, 16, 3)
    rejected(data, "too_large", max_pixels=255)
    with pytest.raises(ImageRejected) as info:
        probe_image(data, max_pixels=255)
    assert info.value.code == "too_large"


def test_max_pixels_from_environment(monkeypatch):
    monkeypatch.setenv("POLYCHROME_MAX_PIXELS", "100")  # read through Settings
    rejected(make_png(11, 10), "too_large")
    assert decode_image(make_png(10, 10)).shape == (10, 10, 3)
    assert decode_image(make_png(11, 10), max_pixels=110).shape == (10, 11, 3)


# --- orientation ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})])
def test_exif_orientation_exact(fmt, kw, orientation):
    stored = noise(3, 5, seed=orientation)  # 3 x 5: every transform is distinguishable
    data = encode(Image.fromarray(stored), fmt, orientation=orientation, **kw)
    want = apply_orientation(stored, orientation)
    out = decode_image(data)
    np.testing.assert_array_equal(out, want)
    info = probe_image(data)
    assert info.orientation == orientation
    assert (info.height, info.width) == out.shape[:2]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(orientation):
    want = block_pattern(3, 4, 8)
    out = decode_image(make_exif_rotated_jpeg(orientation))
    assert out.shape == want.shape
    # Block colours differ by >= 17 levels; JPEG error on flat blocks is a few.
    assert np.abs(out.astype(int) - want).mean() < 3


# --- modes ------------------------------------------------------------------------------


def test_cmyk_jpeg_adobe_inverted_is_sane_rgb():
    for rgb in [(255, 0, 0), (0, 128, 255), (20, 200, 30)]:
        out = decode_image(make_cmyk_jpeg(rgb=rgb))
        assert out.shape == (16, 16, 3)
        assert np.abs(out.astype(int) - rgb).max() <= 6, (rgb, out[0, 0])
    out = decode_image(encode(Image.new("RGB", (4, 4), (255, 0, 0)).convert("CMYK"), "TIFF"))
    assert (out == (255, 0, 0)).all()


def test_16bit_png_scaled_not_clipped():
    values = np.array([[0, 255, 256, 32768, 65280, 65535]], dtype=np.uint16)
    data, _ = make_16bit_png(values=values)
    out = decode_image(data)
    assert out.shape == (1, 6, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 128, 255, 255])
    assert (out[..., 0] == out[..., 2]).all()
    data, values = make_16bit_png(7, 5, channels=3)
    np.testing.assert_array_equal(decode_image(data), (values >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_high_bit_tiff_modes(mode):
    im = make_image(6, 4, mode)
    raw = np.asarray(im).astype(np.int64)
    out = decode_image(encode(im, "TIFF"))
    np.testing.assert_array_equal(out[..., 0], raw >> 8)


def test_float_tiff_in_unit_range_scales_by_255():
    vals = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
    out = decode_image(encode(Image.fromarray(vals), "TIFF"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255, 64])


def test_palette_with_transparency():
    data, rgba = make_palette_transparent_png(6, 4)
    keep = decode_image(data, keep_alpha=True)
    np.testing.assert_array_equal(keep, rgba)
    white = decode_image(data)
    a = rgba[..., 3:].astype(int)
    want = (rgba[..., :3].astype(int) * a + 255 * (255 - a) + 127) // 255
    np.testing.assert_array_equal(white, want)
    assert (white[rgba[..., 3] == 0] == 255).all()  # fully transparent -> background
    black = decode_image(data, background=(0, 0, 0))
    assert (black[rgba[..., 3] == 0] == 0).all()
    assert probe_image(data).has_alpha


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_la_and_rgba_composite_and_keep(fmt):
    for mode in ("LA", "RGBA"):
        im = make_image(7, 5, mode)
        raw = np.asarray(im).astype(int)
        data = encode(im, fmt, **({"lossless": True, "exact": True} if fmt == "WEBP" else {}))
        kept = decode_image(data, keep_alpha=True)
        assert kept.shape == (5, 7, 4)
        colour = np.repeat(raw[..., :1], 3, axis=2) if mode == "LA" else raw[..., :3]
        np.testing.assert_array_equal(kept[..., 3], raw[..., -1])
        np.testing.assert_array_equal(kept[..., :3], colour)
        a = raw[..., -1:]
        bg = np.array([10, 20, 30])
        want = (colour * a + bg * (255 - a) + 127) // 255
        np.testing.assert_array_equal(decode_image(data, background=(10, 20, 30)), want)


def test_keep_alpha_without_alpha_gives_rgb_and_colour_key_gives_alpha():
    assert decode_image(make_png(5, 4), keep_alpha=True).shape == (4, 5, 3)
    grey = np.array([[0, 100], [200, 100]], dtype=np.uint8)
    out = decode_image(encode(Image.fromarray(grey), "PNG", transparency=100), keep_alpha=True)
    np.testing.assert_array_equal(out[..., 3], [[255, 0], [255, 0]])


def test_premultiplied_tiff_is_unpremultiplied():
    for mode, colour, want in [("RGBA", (100, 50, 0, 128), [199, 99, 0, 128]),
                               ("LA", (100, 128), [199, 199, 199, 128])]:
        px = decode_image(make_premultiplied_tiff(mode, colour), keep_alpha=True)[0, 0]
        assert np.abs(px.astype(int) - want).max() <= 1, (mode, px)


def test_one_bit_and_grey():
    im = make_image(9, 3, "1")
    want = np.repeat((np.asarray(im).astype(np.uint8) * 255)[..., None], 3, axis=2)
    for fmt in ("PNG", "BMP", "TIFF"):
        np.testing.assert_array_equal(decode_image(encode(im, fmt)), want)


def test_first_frame_of_animations_and_pages():
    red = np.array([255, 0, 0])
    for data in (make_animated_gif(), make_animated_webp(), make_multipage_tiff()):
        out = decode_image(data)
        assert out.shape == (8, 8, 3)
        assert (out == red).all()


def test_broken_icc_profile_is_ignored_and_srgb_profile_is_applied():
    from PIL import ImageCms

    im = Image.fromarray(block_pattern(1, 2, 4))
    out = decode_image(encode(im, "PNG", icc_profile=b"garbage profile"))
    np.testing.assert_array_equal(out, np.asarray(im))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = decode_image(encode(im, "PNG", icc_profile=srgb))
    assert np.abs(out.astype(int) - np.asarray(im)).max() <= 2


def test_load_truncated_images_must_stay_off(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError):
        decode_image(make_png(2, 2))


# --- property tests ---------------------------------------------------------------------

# (format, mode, save kwargs); formats that store EXIF get orientations 1..8.
COMBOS = [("PNG", m, {}) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")] + [
    ("TIFF", m, {})
    for m in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I", "F")
] + [
    ("PNG", "P", {"transparency": 0}),
    ("PNG", "L", {"transparency": 7}),
    ("WEBP", "RGB", {"lossless": True}),
    ("WEBP", "RGBA", {"quality": 50}),
    ("JPEG", "L", {}),
    ("JPEG", "RGB", {}),
    ("JPEG", "CMYK", {}),
    ("BMP", "1", {}),
    ("BMP", "L", {}),
    ("BMP", "P", {}),
    ("BMP", "RGB", {}),
    ("GIF", "P", {}),
    ("GIF", "P", {"transparency": 3}),
    ("GIF", "L", {}),
]
EXIF_FORMATS = {"PNG", "TIFF", "WEBP", "JPEG"}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(combo=st.sampled_from(COMBOS), orientation=st.integers(1, 8),
       w=st.integers(1, 24), h=st.integers(1, 24), keep_alpha=st.booleans(),
       seed=st.integers(0, 3))
def test_property_modes_orientations_sizes(combo, orientation, w, h, keep_alpha, seed):
    fmt, mode, kw = combo
    orient = orientation if fmt in EXIF_FORMATS else None
    data = make_image_bytes(fmt, w, h, mode, seed=seed, orientation=orient, **kw)
    out = decode_image(data, keep_alpha=keep_alpha)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.flags["C_CONTIGUOUS"]
    transposed = (orient or 1) >= 5
    assert out.shape[:2] == ((w, h) if transposed else (h, w))
    info = probe_image(data)
    assert (info.height, info.width) == out.shape[:2]
    assert out.shape[2] == (4 if keep_alpha and info.has_alpha else 3)


@settings(max_examples=60, deadline=None)
@given(base=st.sampled_from(sorted(LOSSLESS) + ["JPEG"]), data=st.data())
def test_property_mutated_files_never_escape(base, data):
    """Flip, cut or splice bytes of a valid file: the decoder returns an image
    or raises ImageRejected, nothing else."""
    blob = bytearray(make_image_bytes(base, 9, 7, "RGB"))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            blob[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del blob[i: i + data.draw(st.integers(1, 16))]
        else:
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    try:
        out = decode_image(bytes(blob), max_pixels=1_000_000)
    except ImageRejected as e:
        assert e.code in {"unsupported", "corrupt", "too_large"}
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_property_random_bytes(blob):
    try:
        decode_image(blob)
    except ImageRejected as e:
        assert e.code in {"unsupported", "corrupt", "too_large"}


# --- PNG writing and metadata -------------------------------------------------------


def test_encode_png_round_trip_and_metadata(tmp_path):
    meta = {"prompt": "a red fox", "seed": "42", "model": "dcgan@3", "note": "naïve ☃ 雪"}
    for arr in (noise(5, 6, 3), noise(5, 6, 4), noise(5, 6, None)):
        png = encode_png(arr, meta, compress_level=1)
        out = decode_image(png, keep_alpha=True)
        want = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr
        np.testing.assert_array_equal(out, want)
        assert read_png_metadata(png) == meta
    path = tmp_path / "g.png"
    path.write_bytes(encode_png(noise(2, 2, 3), {"k": "v"}))
    assert read_png_metadata(path) == {"k": "v"}
    assert read_png_metadata(make_png(2, 2)) == {}
    assert encode_png(noise(4, 4, 3)) == encode_png(noise(4, 4, 3))  # deterministic


def test_encode_png_rejects_bad_input():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), dtype=np.uint8), {"": "empty key"})
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), dtype=np.uint8), {"k" * 80: "long key"})


def test_read_png_metadata_rejections_and_no_pixel_decode():
    with pytest.raises(ImageRejected) as info:
        read_png_metadata(encode(make_image(4, 4), "JPEG"))
    assert info.value.code == "unsupported"
    png = bytearray(encode_png(noise(2, 2, 3), {"key": "value"}))
    png[png.index(b"value")] ^= 1  # CRC of the tEXt chunk no longer matches
    with pytest.raises(ImageRejected) as info:
        read_png_metadata(bytes(png))
    assert info.value.code == "corrupt"
    # zTXt is read too, and a header bomb costs nothing: pixels are never touched.
    ztxt = b"comment\x00\x00" + zlib.compress(b"compressed text")
    bomb = make_raw_png(50_000, 50_000, rows=b"\x00" * 4, chunks=[(b"zTXt", ztxt)])
    t0 = time.perf_counter()
    assert read_png_metadata(bomb) == {"comment": "compressed text"}
    assert time.perf_counter() - t0 < 0.5


# --- tensors ------------------------------------------------------------------------------


def test_tensor_round_trip_is_exact_for_all_values():
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None].repeat(3, axis=2)
    t = to_tensor(arr)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert t.min().item() == -1.0 and t.max().item() == 1.0
    np.testing.assert_array_equal(from_tensor(t), arr)
    batch = np.stack([arr, arr[::-1]])
    tb = to_tensor(batch)
    assert tb.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(from_tensor(tb), batch)
    assert to_tensor(arr[..., 0]).shape == (1, 16, 16)


def test_from_tensor_clamps_and_rounds():
    t = torch.tensor([-3.0, -1.0, 0.0, 0.999, 1.0, 7.0]).reshape(1, 1, 6)
    out = from_tensor(t.requires_grad_())
    assert out.shape == (1, 6, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 128, 255, 255, 255])
    with pytest.raises(ValueError):
        from_tensor(torch.zeros(4, 4))
    with pytest.raises(ValueError):
        to_tensor(np.zeros((2, 2, 3), dtype=np.float32))
