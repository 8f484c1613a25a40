"""The dataset store end to end: real files, real archives, real SQLite in a temp home."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, text

from imagegen import (
    make_16bit_png,
    make_cmyk_jpeg,
    make_exif_rotated_jpeg,
    make_palette_transparent_png,
    make_png,
    make_png_header_claiming,
    make_truncated_png,
)
from polychrome.data.clean import pixel_sha256
from polychrome.data.preview import preview_grid, write_preview
from polychrome.errors import DatasetError, NotFound
from polychrome.imageio import decode_image
from polychrome.persistence.datasets import (
    DatasetImage,
    DatasetVersion,
    dataset_report,
    export_dataset,
    import_dataset,
    list_datasets,
    remove_dataset,
    resolve_dataset,
    show_dataset,
)
from polychrome.persistence.db import get_engine, session_scope

pytestmark = pytest.mark.database  # on SQLite and on PostgreSQL

REASONS = ("corrupt", "too_small", "duplicate", "unsupported", "unsafe")


def smooth(seed: int, w: int = 40, h: int = 40) -> np.ndarray:
    """(h, w, 3) uint8: random 5x5 colours upscaled -> smooth, distinct per seed, and
    robust to JPEG (so a re-encode is a *near* duplicate, not a different image)."""
    small = np.random.default_rng(seed).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def save(path: Path, arr: np.ndarray, fmt: str = "PNG", **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt, **kw)


def put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def messy(tmp_path) -> Path:
    """Three styles + a root image, with every kind of bad and awkward file."""
    src = tmp_path / "messy"
    save(src / "ink/a.png", smooth(1))
    save(src / "ink/b.png", smooth(2))
    save(src / "ink/c.png", smooth(3))
    save(src / "ink/sub/deep.png", smooth(4))  # deeper than the style folder: still "ink"
    shutil.copy(src / "ink/a.png", src / "ink/copy_of_a.png")  # exact duplicate (bytes)
    save(src / "ink/a_bmp.bmp", smooth(1), "BMP")  # exact duplicate (pixels)
    save(src / "ink/b_q90.jpg", smooth(2), "JPEG", quality=90)  # near duplicate
    touched = smooth(3).copy()
    touched[7, 9] = 255 - touched[7, 9]
    save(src / "ink/c_touched.png", touched)  # near duplicate: one pixel changed
    put(src / "ink/corrupt.png", b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    put(src / "ink/truncated.png", make_truncated_png(40, 40))
    put(src / "ink/tiny.png", make_png(16, 12))
    put(src / "ink/notes.png", b"this is a text file wearing a .png name\n")
    put(src / "ink/.DS_Store", b"\x00\x00\x00\x01Bud1")
    put(src / "ink/._a.png", b"AppleDouble junk")
    put(src / "__MACOSX/ink/._a.png", b"AppleDouble junk")
    put(src / "flat/cmyk.jpg", make_cmyk_jpeg(40, 40, rgb=(255, 0, 0)))
    put(src / "flat/sixteen.png", make_16bit_png(40, 40)[0])
    put(src / "flat/palette.png", make_palette_transparent_png(40, 40)[0])
    put(src / "flat/rotated.jpg", make_exif_rotated_jpeg(6, block=12))  # shows 48 x 36
    save(src / "flat/a.png", smooth(10))
    save(src / "flat/a.jpg", smooth(11), "JPEG", quality=95)  # same stem as a.png
    put(src / "flat/bomb.png", make_png_header_claiming(50_000, 50_000))
    save(src / "neon/a.png", smooth(20))
    put(src / "neon/readme.txt", b"credits: nobody\n")
    put(tmp_path / "outside.png", make_png(40, 40, seed=9))
    (src / "neon/link.png").symlink_to(tmp_path / "outside.png")
    save(src / "top.png", smooth(30))
    return src


MESSY_EXPECTED = {
    "images": 12,
    "domains": {"default": 1, "flat": 6, "ink": 4, "neon": 1},
    "rejected": {"corrupt": 2, "too_small": 1, "duplicate": 4, "unsupported": 2, "unsafe": 2},
}


def home_files(home: Path) -> set[str]:
    return {p.relative_to(home).as_posix() for p in home.rglob("*")
            if not p.name.startswith("db.sqlite")}


def test_import_messy_folder(messy, polychrome_home):
    result = import_dataset(messy, "messy")
    assert result == {"name": "messy", "version": 1, **MESSY_EXPECTED}
    status = {e["source_name"]: e["status"] for e in dataset_report("messy")}
    assert status == {
        "ink/a.png": "imported", "ink/b.png": "imported", "ink/c.png": "imported",
        "ink/sub/deep.png": "imported", "ink/copy_of_a.png": "duplicate",
        "ink/a_bmp.bmp": "duplicate", "ink/b_q90.jpg": "duplicate",
        "ink/c_touched.png": "duplicate", "ink/corrupt.png": "corrupt",
        "ink/truncated.png": "corrupt", "ink/tiny.png": "too_small",
        "ink/notes.png": "unsupported", "flat/cmyk.jpg": "imported",
        "flat/sixteen.png": "imported", "flat/palette.png": "imported",
        "flat/rotated.jpg": "imported", "flat/a.png": "imported", "flat/a.jpg": "imported",
        "flat/bomb.png": "unsafe", "neon/a.png": "imported", "neon/readme.txt": "unsupported",
        "neon/link.png": "unsafe", "top.png": "imported",
    }  # hidden files and __MACOSX are not even mentioned
    details = {e["source_name"]: e["detail"] for e in dataset_report("messy")}
    assert "ink/a.png" in details["ink/a_bmp.bmp"] and "exact" in details["ink/a_bmp.bmp"]
    assert "near" in details["ink/b_q90.jpg"] and "ink/b.png" in details["ink/b_q90.jpg"]

    ref = resolve_dataset("messy")
    m = ref.manifest
    assert (m["name"], m["version"], m["domains"], m["rejected"]) == (
        "messy", 1, MESSY_EXPECTED["domains"], MESSY_EXPECTED["rejected"])
    files = [e["file"] for e in m["images"]]
    assert files == sorted(files) and len(files) == 12
    by_source = {e["source_name"]: e for e in m["images"]}
    # stems: same name across styles stays aligned; collisions get a numeric suffix
    assert by_source["ink/a.png"]["file"] == "images/ink/a.png"
    assert by_source["neon/a.png"]["file"] == "images/neon/a.png"
    assert by_source["flat/a.jpg"]["file"] == "images/flat/a.png"
    assert by_source["flat/a.png"]["file"] == "images/flat/a_1.png"
    assert by_source["ink/sub/deep.png"]["file"] == "images/ink/deep.png"
    assert by_source["top.png"]["file"] == "images/default/top.png"
    for e in m["images"]:  # normalised RGB PNG at original size, hashes of its pixels
        arr = decode_image(ref.path / e["file"])
        assert arr.shape == (e["height"], e["width"], 3)
        assert Image.open(ref.path / e["file"]).mode == "RGB"
        assert e["sha256"] == pixel_sha256(arr) and len(e["phash"]) == 16
    rot = by_source["flat/rotated.jpg"]
    assert (rot["width"], rot["height"]) == (48, 36)  # EXIF orientation applied
    values = make_16bit_png(40, 40)[1]
    sixteen = decode_image(ref.path / by_source["flat/sixteen.png"]["file"])
    assert np.array_equal(sixteen[..., 0], (values >> 8).astype(np.uint8))
    rgba = make_palette_transparent_png(40, 40)[1].astype(np.int32)
    on_white = (rgba[..., :3] * rgba[..., 3:] + 255 * (255 - rgba[..., 3:])) / 255
    palette = decode_image(ref.path / by_source["flat/palette.png"]["file"])
    assert np.abs(palette - on_white).max() <= 1
    cmyk = decode_image(ref.path / by_source["flat/cmyk.jpg"]["file"]).reshape(-1, 3).mean(0)
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60

    with session_scope() as s:
        row = s.scalars(select(DatasetVersion).where(DatasetVersion.name == "messy")).one()
        shas = s.scalars(select(DatasetImage.sha256)
                         .where(DatasetImage.dataset_id == row.id)).all()
    assert (row.n_images, row.domains, row.rejected) == (
        12, MESSY_EXPECTED["domains"], MESSY_EXPECTED["rejected"])
    assert sorted(shas) == sorted(e["sha256"] for e in m["images"])
    assert not [p for p in (polychrome_home / "tmp").iterdir() if p.name != "locks"]

    info = show_dataset("messy")
    assert info["sizes"] == {"width": {"min": 40, "median": 40, "max": 48},
                             "height": {"min": 36, "median": 40, "max": 40}}
    assert info["path"] == str(ref.path) and info["source"] == str(messy.resolve())


def test_min_size_option(messy):
    result = import_dataset(messy, "strict", min_size=37)  # drops the 48x36 rotated JPEG too
    assert result["images"] == 11 and result["rejected"]["too_small"] == 2
    with pytest.raises(DatasetError, match="min-size"):
        import_dataset(messy, "zero", min_size=0)


def test_versions_are_immutable(messy):
    assert import_dataset(messy, "styles")["version"] == 1
    save(messy / "neon/b.png", smooth(21))
    second = import_dataset(messy, "styles")
    assert second["version"] == 2 and second["domains"]["neon"] == 2
    assert resolve_dataset("styles").version == 2
    v1 = resolve_dataset("styles:1")
    assert v1.version == 1 and v1.manifest["domains"]["neon"] == 1
    assert show_dataset("styles", 1)["images"] == 12 and show_dataset("styles")["versions"] == [1, 2]
    assert (v1.path / "images/neon/a.png").is_file()
    [entry] = list_datasets()
    assert (entry["name"], entry["latest_version"], entry["versions"], entry["images"]) == (
        "styles", 2, [1, 2], 13)
    with pytest.raises(NotFound, match="no version 7"):
        resolve_dataset("styles", 7)
    with pytest.raises(NotFound):
        resolve_dataset("nothing")


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "../x", "x" * 65, "é"])
def test_bad_names(messy, name):
    with pytest.raises(DatasetError, match="invalid dataset name"):
        import_dataset(messy, name)


def assert_nothing_left(home: Path, name: str) -> None:
    assert not (home / "datasets" / name).exists()
    assert not [p for p in (home / "tmp").iterdir() if p.name != "locks"]
    with session_scope() as s:
        assert s.scalars(select(DatasetVersion).where(DatasetVersion.name == name)).all() == []
        assert s.scalars(select(DatasetImage)).all() == []


def test_failed_imports_leave_nothing(tmp_path, polychrome_home):
    junk = tmp_path / "junk"
    put(junk / "s/readme.txt", b"no images here")
    put(junk / "s/tiny.png", make_png(8, 8))
    with pytest.raises(DatasetError, match="no valid images"):
        import_dataset(junk, "junk")
    assert_nothing_left(polychrome_home, "junk")
    with pytest.raises(DatasetError, match="not found"):
        import_dataset(tmp_path / "missing", "junk")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + os.urandom(64))
    with pytest.raises(DatasetError):
        import_dataset(broken, "junk")
    assert_nothing_left(polychrome_home, "junk")


def test_failed_db_insert_removes_the_directory(messy, polychrome_home, db_backend):
    """A real database failure half-way through the transaction (a trigger that aborts the
    image rows) must roll back the version row and delete the renamed directory."""
    if db_backend == "sqlite":
        create = ["CREATE TRIGGER no_images BEFORE INSERT ON dataset_images "
                  "BEGIN SELECT RAISE(ABORT, 'disk full, say'); END"]
        drop = ["DROP TRIGGER no_images"]
    else:
        create = ["CREATE FUNCTION no_images() RETURNS trigger AS $$ BEGIN "
                  "RAISE EXCEPTION 'disk full, say'; END $$ LANGUAGE plpgsql",
                  "CREATE TRIGGER no_images BEFORE INSERT ON dataset_images "
                  "FOR EACH ROW EXECUTE FUNCTION no_images()"]
        drop = ["DROP TRIGGER no_images ON dataset_images", "DROP FUNCTION no_images()"]
    with get_engine().begin() as conn:
        for sql in create:
            conn.execute(text(sql))
    with pytest.raises(Exception, match="disk full"):
        import_dataset(messy, "doomed")
    assert_nothing_left(polychrome_home, "doomed")
    with get_engine().begin() as conn:
        for sql in drop:
            conn.execute(text(sql))
    assert import_dataset(messy, "doomed")["version"] == 1


# -- archives ----------------------------------------------------------------------------
def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def zip_info(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.create_system, info.external_attr = 3, mode << 16
    return info


def build_evil_archives(tmp_path: Path, abs_name: str) -> tuple[Path, Path]:
    """A zip and a tgz, each wrapping two styles in one top folder, plus bad members."""
    goods = {"pack/noto/a.png": make_png(40, 40, seed=1), "pack/noto/b.png": make_png(40, 40, seed=2),
             "pack/twemoji/a.png": make_png(40, 40, seed=3)}
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name, data in goods.items():
            z.writestr(name, data)
        z.writestr(zip_info("../sibling/escape.png"), goods["pack/noto/a.png"])
        z.writestr(zip_info("pack/../../../escape.png"), goods["pack/noto/a.png"])
        z.writestr(zip_info(abs_name), goods["pack/noto/a.png"])
        z.writestr(zip_info("C:\\Users\\x.png"), goods["pack/noto/a.png"])
        z.writestr(zip_info("pack/noto/link.png", stat.S_IFLNK | 0o777), "../../../etc/passwd")
        z.writestr(zip_info("pack/noto/bomb.png"), bytes(8 * 2**20), zipfile.ZIP_DEFLATED)
    tpath = tmp_path / "evil.tgz"
    with tarfile.open(tpath, "w:gz", compresslevel=1) as t:
        def add(name, data=b"", kind=tarfile.REGTYPE, linkname=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, linkname, len(data)
            t.addfile(info, io.BytesIO(data) if data else None)

        for name, data in goods.items():
            add(name, data)
        add("../sibling/escape.png", goods["pack/noto/a.png"])
        add(abs_name, goods["pack/noto/a.png"])
        add("pack/noto/sym.png", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("pack/noto/hard.png", kind=tarfile.LNKTYPE, linkname="pack/noto/a.png")
        add("pack/noto/fifo.png", kind=tarfile.FIFOTYPE)
        add("pack/noto/bomb.png", bytes(8 * 2**20))
    return zpath, tpath


def test_hostile_archives(tmp_path, polychrome_home, monkeypatch):
    cwd, sibling = tmp_path / "cwd", tmp_path / "sibling"
    cwd.mkdir()
    sibling.mkdir()
    abs_target = Path("/tmp") / f"polychrome-escape-{uuid.uuid4().hex}.png"
    zpath, tpath = build_evil_archives(tmp_path, str(abs_target))
    monkeypatch.chdir(cwd)
    before = tree_state(tmp_path)
    for path, unsafe in ((zpath, 6), (tpath, 6)):
        name = path.suffix[1:]
        result = import_dataset(path, name)
        assert result["domains"] == {"noto": 2, "twemoji": 1}  # the "pack" wrapper is unwrapped
        assert result["rejected"] == {**dict.fromkeys(REASONS, 0), "unsafe": unsafe}
        report = dataset_report(name)
        assert sum(e["status"] == "unsafe" for e in report) == unsafe
        assert tree_state(tmp_path) == before  # nothing written next to it or in the cwd
        assert not abs_target.exists()
        assert {p.relative_to(polychrome_home / "datasets" / name / "1").as_posix()
                for p in (polychrome_home / "datasets" / name / "1").rglob("*.png")} == {
            "images/noto/a.png", "images/noto/b.png", "images/twemoji/a.png"}
    assert sorted(os.listdir(cwd)) == [] and sorted(os.listdir(sibling)) == []


def test_uploads_form():
    result = import_dataset([("emoji/noto/1f600.png", make_png(40, 40, seed=1)),
                             ("emoji/twemoji/1f600.png", make_png(40, 40, seed=2)),
                             ("emoji/../../x.png", make_png(40, 40, seed=3)),
                             ("emoji/.DS_Store", b"junk")], "uploaded")
    assert result["domains"] == {"noto": 1, "twemoji": 1}
    assert result["rejected"]["unsafe"] == 1
    assert resolve_dataset("uploaded").manifest["source"] == "upload (4 files)"


# -- export, remove, preview ----------------------------------------------------------------
def test_export_reimport_same_counts(messy, tmp_path):
    import_dataset(messy, "orig")
    out = export_dataset("orig", tmp_path / "backup.zip")
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
    assert "manifest.json" in names and "ink/a.png" in names and "default/top.png" in names
    back = import_dataset(out, "back")
    assert back["images"] == 12 and back["domains"] == MESSY_EXPECTED["domains"]
    assert back["rejected"] == dict.fromkeys(REASONS, 0)
    a, b = resolve_dataset("orig").manifest, resolve_dataset("back").manifest
    assert [(e["file"], e["sha256"]) for e in a["images"]] == [
        (e["file"], e["sha256"]) for e in b["images"]]


def test_remove(messy, polychrome_home):
    import_dataset(messy, "gone")
    import_dataset(messy, "gone")
    import_dataset(messy, "kept")
    (polychrome_home / "datasets/gone/2/cache").mkdir()  # the training cache lives inside
    assert remove_dataset("gone", 1) == [1]
    assert not (polychrome_home / "datasets/gone/1").exists()
    assert [d["versions"] for d in list_datasets() if d["name"] == "gone"] == [[2]]
    assert remove_dataset("gone") == [2]
    assert not (polychrome_home / "datasets/gone").exists()
    with pytest.raises(NotFound):
        resolve_dataset("gone")
    with pytest.raises(NotFound):
        remove_dataset("gone")
    with session_scope() as s:  # image rows went with their versions (cascade)
        kept = s.scalars(select(DatasetVersion)).one()
        n_rows = len(s.scalars(select(DatasetImage)).all())
    assert kept.name == "kept" and n_rows == 12
    assert import_dataset(messy, "gone")["version"] == 1  # numbering restarts when all gone


def test_preview(messy, tmp_path):
    import_dataset(messy, "pv")
    grid = preview_grid("pv", per_domain=3, cell=32)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[0] == 4 * (32 + 4) + 4  # one row per domain
    out = write_preview("pv", per_domain=3, cell=32, out=tmp_path / "grid.png")
    assert np.array_equal(decode_image(out), grid)
    assert grid[:, : grid.shape[1] // 4].min() < 100  # label text was drawn


def test_show_json_serialisable(messy):
    import_dataset(messy, "js")
    json.dumps(show_dataset("js"))
    json.dumps(list_datasets())
