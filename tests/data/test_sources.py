"""Import sources: path safety, archive caps (bombs, lying headers), folders, naming."""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imagegen import make_png
from polychrome.data.clean import (
    Deduper,
    domain_and_stem,
    fingerprint,
    hamming,
    pixel_sha256,
    safe_component,
    unique_stem,
    wrapper_depth,
)
from polychrome.data.sources import (
    Limits,
    TarSource,
    ZipSource,
    is_skipped,
    open_source,
    sniff_archive,
    split_member_path,
)
from polychrome.errors import DatasetError

LIMITS = Limits(max_member_bytes=64 * 2**20, max_archive_bytes=256 * 2**20,
                max_members=1000, max_compression_ratio=200.0)
GOOD = make_png(40, 40, seed=1)


def reasons(source) -> dict[str, str | None]:
    with source:
        return {m.name: m.reason for m in source}


# -- names ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["../evil.png", "a/../../evil.png", "/etc/passwd", "C:/x.png",
                                 "c:x.png", "a\\..\\..\\x.png", "\\\\server\\share\\x.png",
                                 "a/b\x00.png", "a/\nb.png"])
def test_unsafe_member_paths(raw):
    parts, problem = split_member_path(raw)
    assert parts is None and problem


@pytest.mark.parametrize("raw,parts", [("./noto/a.png", ("noto", "a.png")),
                                       ("noto//a.png", ("noto", "a.png")),
                                       ("noto\\a.png", ("noto", "a.png")),
                                       ("a..b/c.png", ("a..b", "c.png"))])
def test_safe_member_paths(raw, parts):
    assert split_member_path(raw) == (parts, "")


def test_skipped_names():
    for parts in [(".DS_Store",), ("a", "._x.png"), ("__MACOSX", "a", "x.png"), (".git", "x"),
                  ("manifest.json",)]:
        assert is_skipped(parts)
    assert not is_skipped(("a", "manifest.json"))
    assert not is_skipped(("a", "x.png"))


def test_wrapper_and_domains():
    assert wrapper_depth([("emoji", "noto", "a.png"), ("emoji", "tw", "a.png")]) == 1
    assert wrapper_depth([("emoji", "top.png"), ("emoji", "noto", "a.png")]) == 1
    assert wrapper_depth([("noto", "a.png"), ("noto", "b.png")]) == 0  # keep the style name
    assert wrapper_depth([("noto", "a.png"), ("tw", "x", "a.png")]) == 0
    assert domain_and_stem(("noto", "deep", "er", "a.b.png"), 0) == ("noto", "a.b")
    assert domain_and_stem(("top.png",), 0) == ("default", "top")
    assert domain_and_stem(("emoji", "noto", "a.png"), 1) == ("noto", "a")
    assert safe_component("a/b\\c") == "a_b_c"
    assert safe_component("..") == "_."
    assert safe_component("  ") == "_"
    assert len(safe_component("é" * 200).encode()) <= 120
    taken: set[str] = set()
    assert [unique_stem(s, taken) for s in ["a", "A", "a_1", "a"]] == ["a", "A_1", "a_1_1", "a_2"]


# -- hashes ----------------------------------------------------------------------------
def test_pixel_hash_and_phash():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    from PIL import Image

    smooth = np.asarray(Image.fromarray(small).resize((48, 48), Image.Resampling.BICUBIC))
    touched = smooth.copy()
    touched[3, 3] = 255 - touched[3, 3]
    other = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
                       .resize((48, 48), Image.Resampling.BICUBIC))
    a, b, c = fingerprint(smooth), fingerprint(touched), fingerprint(other)
    assert a.sha256 == pixel_sha256(smooth.copy()) != b.sha256
    # shape is part of the pixel hash: same bytes, other shape -> other hash
    assert pixel_sha256(smooth.reshape(24, 96, 3)) != a.sha256
    assert hamming(a.phash, b.phash) <= 4 < hamming(a.phash, c.phash)
    d = Deduper()
    assert d.match(a) is None
    d.add(a)
    assert d.match(b)[0] == 0 and d.match(b)[1].startswith("near")
    assert d.match(fingerprint(smooth)) == (0, "exact")
    assert d.match(c) is None
    # same drawing in another colour: grey pHash agrees, colour thumbnail does not
    recoloured = np.ascontiguousarray(smooth[:, :, ::-1])
    assert d.match(fingerprint(recoloured)) is None


def test_phash_matches_reference_dct():
    """Our matrix DCT against scipy's 2-D DCT-II, bit by bit (median of the AC terms)."""
    import scipy.fft

    from polychrome.data.clean import phash_from_grey

    for seed in range(5):
        grey = np.random.default_rng(seed).random((32, 32)).astype(np.float32) * 255
        low = scipy.fft.dctn(grey.astype(np.float64), type=2, norm="ortho")[:8, :8].ravel()
        bits = "".join("1" if c > np.median(low[1:]) else "0" for c in low)
        assert phash_from_grey(grey) == int(bits, 2)


# -- zip -------------------------------------------------------------------------------
def _zip_member(z: zipfile.ZipFile, name: str, data: bytes, mode: int | None = None,
                compress: int = zipfile.ZIP_STORED) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = compress
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    z.writestr(info, data)


def evil_zip(path: Path) -> Path:
    """Good members plus every kind of bad member a zip can carry."""
    with zipfile.ZipFile(path, "w") as z:
        _zip_member(z, "noto/good.png", GOOD)
        _zip_member(z, "noto/.hidden.png", GOOD)
        _zip_member(z, "__MACOSX/noto/._good.png", b"junk")
        _zip_member(z, "../escape.png", GOOD)
        _zip_member(z, "noto/../../escape2.png", GOOD)
        _zip_member(z, "/abs.png", GOOD)
        _zip_member(z, "C:\\windows.png", GOOD)
        _zip_member(z, "noto/link.png", b"/etc/passwd", mode=stat.S_IFLNK | 0o777)
        _zip_member(z, "noto/fifo.png", b"", mode=stat.S_IFIFO | 0o644)
        _zip_member(z, "noto/bomb.png", bytes(50 * 2**20), compress=zipfile.ZIP_DEFLATED)
        _zip_member(z, "noto/liar.png", bytes(range(256)) * 8192, compress=zipfile.ZIP_DEFLATED)
    # Make "liar.png" under-declare its size (2 MiB -> 1000 bytes) in both headers.
    raw = bytearray(path.read_bytes())
    name = b"noto/liar.png"
    local = raw.find(b"PK\x03\x04")
    while local != -1:
        if raw[local + 30:local + 30 + len(name)] == name:
            raw[local + 22:local + 26] = struct.pack("<I", 1000)
        local = raw.find(b"PK\x03\x04", local + 4)
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        if raw[central + 46:central + 46 + len(name)] == name:
            raw[central + 24:central + 28] = struct.pack("<I", 1000)
        central = raw.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(raw))
    return path


EVIL_ZIP_UNSAFE = {"../escape.png", "noto/../../escape2.png", "/abs.png", "C:\\windows.png",
                   "noto/link.png", "noto/fifo.png", "noto/bomb.png", "noto/liar.png"}


def test_zip_members(tmp_path):
    got = reasons(open_source(evil_zip(tmp_path / "evil.zip"), LIMITS))
    assert got.pop("noto/good.png") is None
    assert got == dict.fromkeys(EVIL_ZIP_UNSAFE, "unsafe")  # hidden / __MACOSX: not listed


def test_zip_caps(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(5):
            _zip_member(z, f"s/{i}.png", make_png(40, 40, seed=i))
        _zip_member(z, "s/big.png", os.urandom(20000))
    small = Limits(max_member_bytes=10000, max_archive_bytes=10**9, max_members=4,
                   max_compression_ratio=200.0)
    got = reasons(ZipSource(path, small))
    assert [got[f"s/{i}.png"] for i in range(5)] == [None] * 4 + ["unsafe"]  # count cap
    assert got["s/big.png"] == "unsafe"
    total_cap = Limits(max_member_bytes=10**6, max_archive_bytes=2 * len(GOOD) + 100,
                       max_members=100, max_compression_ratio=200.0)
    got = reasons(ZipSource(path, total_cap))
    assert list(got.values()).count(None) == 2 and list(got.values()).count("unsafe") == 4


def test_zip_overlapping_members(tmp_path):
    """Two central-directory entries sharing one local file: the overlap bomb shape."""
    path = tmp_path / "overlap.zip"
    with zipfile.ZipFile(path, "w") as z:
        _zip_member(z, "s/a.png", GOOD)
        _zip_member(z, "s/b.png", GOOD)
    raw = bytearray(path.read_bytes())
    first = raw.find(b"PK\x01\x02")
    second = raw.find(b"PK\x01\x02", first + 4)
    raw[second + 42:second + 46] = raw[first + 42:first + 46]  # b's header offset := a's
    path.write_bytes(bytes(raw))
    got = reasons(ZipSource(path, LIMITS))
    assert sorted(got.values(), key=str) == [None, "unsafe"]


# -- tar -------------------------------------------------------------------------------
def _tar_add(t: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
             linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def evil_tar(path: Path, mode: str = "w:gz") -> Path:
    kw = {"compresslevel": 1} if mode == "w:gz" else {}
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT, **kw) as t:
        _tar_add(t, "./noto/good.png", GOOD)
        _tar_add(t, "noto/._good.png", b"junk")
        _tar_add(t, "../escape.png", GOOD)
        _tar_add(t, "/tmp/abs.png", GOOD)
        _tar_add(t, "noto/sym.png", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        _tar_add(t, "noto/hard.png", kind=tarfile.LNKTYPE, linkname="../../etc/passwd")
        _tar_add(t, "noto/fifo.png", kind=tarfile.FIFOTYPE)
        _tar_add(t, "noto/dev.png", kind=tarfile.CHRTYPE)
        _tar_add(t, "noto/zeros.png", bytes(50 * 2**20))
        _tar_add(t, "noto/after.png", make_png(40, 40, seed=2))
    return path


EVIL_TAR_UNSAFE = {"../escape.png", "/tmp/abs.png", "noto/sym.png", "noto/hard.png",
                   "noto/fifo.png", "noto/dev.png", "noto/zeros.png"}


def test_tar_members(tmp_path):
    got = reasons(open_source(evil_tar(tmp_path / "evil.tgz"), LIMITS))
    assert got.pop("noto/good.png") is None and got.pop("noto/after.png") is None
    assert got == dict.fromkeys(EVIL_TAR_UNSAFE, "unsafe")


def test_tar_ratio_checked_while_reading(tmp_path):
    """The 50 MiB zero member is under the member cap: only the measured ratio stops it,
    and it is stopped long before all 50 MiB are decompressed."""
    path = evil_tar(tmp_path / "evil.tgz")
    with TarSource(path, LIMITS) as src:
        details = {m.name: m.detail for m in src}
    assert "ratio" in details["noto/zeros.png"]
    # an uncompressed tar has ratio ~1: the same member is only subject to the size caps
    plain = evil_tar(tmp_path / "evil.tar", mode="w")
    got = reasons(TarSource(plain, LIMITS))
    assert got["noto/zeros.png"] is None
    capped = Limits(max_member_bytes=2**20, max_archive_bytes=2**30, max_members=100,
                    max_compression_ratio=200.0)
    assert reasons(TarSource(plain, capped))["noto/zeros.png"] == "unsafe"


def test_truncated_tar_is_an_error(tmp_path):
    path = evil_tar(tmp_path / "evil.tgz")
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        reasons(open_source(cut, LIMITS))


# -- folders and sniffing ------------------------------------------------------------------
def test_folder_source(tmp_path):
    root, outside = tmp_path / "src", tmp_path / "outside"
    (root / "noto" / "deep").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(GOOD)
    (root / "noto" / "a.png").write_bytes(GOOD)
    (root / "noto" / "deep" / "b.png").write_bytes(GOOD)
    (root / "noto" / ".DS_Store").write_bytes(b"x")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "x.png").write_bytes(GOOD)
    (root / "noto" / "out.png").symlink_to(outside / "secret.png")
    (root / "noto" / "outdir").symlink_to(outside, target_is_directory=True)
    (root / "noto" / "in.png").symlink_to(root / "noto" / "a.png")
    (root / "noto" / "loop").symlink_to(root, target_is_directory=True)
    os.mkfifo(root / "noto" / "fifo.png")  # would block a naive reader forever
    src = open_source(root, LIMITS)
    assert src.total == 6
    assert reasons(src) == {"noto/a.png": None, "noto/deep/b.png": None, "noto/in.png": None,
                            "noto/out.png": "unsafe", "noto/outdir": "unsafe",
                            "noto/fifo.png": "unsafe"}


def test_sniffing_ignores_extensions(tmp_path):
    z = evil_zip(tmp_path / "a.dat")
    t = evil_tar(tmp_path / "b.zip")
    txt = tmp_path / "c.tar"
    txt.write_text("not an archive at all\n" * 50)
    assert sniff_archive(z) == "zip" and sniff_archive(t) == "tar" and sniff_archive(txt) is None
    with pytest.raises(DatasetError, match="unsupported source"):
        open_source(txt, LIMITS)
    with pytest.raises(DatasetError, match="not found"):
        open_source(tmp_path / "missing", LIMITS)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DatasetError, match="cannot read zip"):
        open_source(broken, LIMITS)


def test_uploads():
    got = reasons(open_source([("noto/a.png", GOOD), ("../x.png", GOOD), (".DS_Store", b"x")],
                              LIMITS))
    assert got == {"noto/a.png": None, "../x.png": "unsafe"}
