"""Hostile names in an import: NUL, control and bidirectional-override characters, names too
long for a filesystem or the store. Each member is refused or renamed, and the report says
which and why; nothing reaches the disk or the database as it was."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from imagegen import make_png
from polychrome.data.sources import (
    MAX_PATH_CHARS,
    Limits,
    name_problem,
    open_source,
    shown_name,
    split_member_path,
)
from polychrome.errors import DatasetError, NotFound
from polychrome.persistence.datasets import dataset_report, import_dataset, resolve_dataset

LIMITS = Limits(max_member_bytes=64 * 2**20, max_archive_bytes=256 * 2**20,
                max_members=1000, max_compression_ratio=200.0)
HIDDEN = ("\x00", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067",
          "\u2068", "\u2069", "\x85", "\x9b", "\u2028")
LONG_FOLDER = "f" * 100


def _png(seed: int) -> bytes:
    return make_png(40, 40, seed=seed)


def _zip_with(names: list[str]) -> bytes:
    """A zip whose members carry exactly these names (NUL included: zipfile cuts a name at
    a NUL when writing, so the bytes are patched in afterwards)."""
    buf = io.BytesIO()
    patches = []
    with zipfile.ZipFile(buf, "w") as z:
        for i, name in enumerate(names):
            stored = name.replace("\x00", "\x01")
            if stored != name:
                patches.append((stored.encode(), name.encode()))
            z.writestr(zipfile.ZipInfo(stored), _png(i))
    data = buf.getvalue()
    for old, new in patches:
        data = data.replace(old, new)  # local header and central directory (no CRC on names)
    return data


HOSTILE = {
    "ink/nul\x00.exe.png": "U+0000",
    "ink/\u202egnp.exe.png": "U+202E",
    "ink\u2066/iso.png": "U+2066",
    "ink/next\x85line.png": "U+0085",
    "ink/csi\x9b.png": "U+009B",
    "ink/sep\u2028.png": "U+2028",
    "ink/" + "a" * 300 + ".png": "255 bytes",
    "ink/" + "\u00e9" * 130 + ".png": "255 bytes",  # 130 characters, 260 bytes
    "/".join([LONG_FOLDER] * 11) + "/x.png": f"{MAX_PATH_CHARS} characters",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_member_paths_are_refused_with_a_reason(name):
    parts, why = split_member_path(name)
    assert parts is None and HOSTILE[name] in why


@pytest.mark.parametrize("char", HIDDEN)
def test_every_hidden_character_is_named(char):
    assert f"U+{ord(char):04X}" in name_problem(f"a{char}b")
    shown = shown_name(f"a{char}b")
    assert char not in shown and f"\\u{ord(char):04x}" in shown


def test_shown_names_are_short_and_printable():
    shown = shown_name("\u202e" + "x" * 5000)
    assert len(shown) < 250 and "5001 characters" in shown and "\u202e" not in shown
    assert shown_name("noto/a.png") == "noto/a.png"
    assert shown_name("caf\u00e9/\u4e2d.png") == "caf\u00e9/\u4e2d.png"  # letters stay


def _check_report(report: list[dict], expect_imported: set[str]) -> None:
    by_status: dict[str, list[dict]] = {}
    for e in report:
        by_status.setdefault(e["status"], []).append(e)
        text = json.dumps(e, ensure_ascii=False)
        assert not any(c in text for c in HIDDEN), e  # escaped, never as they were
        assert len(e["source_name"]) < 260, e
    assert {e["source_name"] for e in by_status["imported"]} == expect_imported
    refused = by_status["unsafe"]
    assert len(refused) == len(HOSTILE)
    details = " | ".join(e["detail"] for e in refused)
    for words in HOSTILE.values():
        assert words in details
    # a refused name is listed, escaped, so a reader can find the file
    assert any(e["source_name"] == "ink/\\u202egnp.exe.png" for e in refused)
    assert any(e["source_name"] == "ink/nul\\u0000.exe.png" for e in refused)


def _check_store(name: str) -> None:
    ref = resolve_dataset(name)
    names = [p.relative_to(ref.path).as_posix() for p in (ref.path / "images").rglob("*")]
    assert not any(c in n for n in names for c in HIDDEN)
    assert all(len(part.encode()) <= 120 + len("_99.png") for n in names for part in n.split("/"))
    assert set(ref.manifest["domains"]) == {"ink"}


def test_a_zip_with_hostile_names(tmp_path):
    safe = {"ink/ok.png", "ink/" + "b" * 150 + ".png"}
    path = tmp_path / "hostile.zip"
    path.write_bytes(_zip_with(sorted(safe) + sorted(HOSTILE)))
    result = import_dataset(path, "zipnames")
    assert result["images"] == 2 and result["rejected"]["unsafe"] == len(HOSTILE)
    report = dataset_report("zipnames")
    _check_report(report, safe)
    long = next(e for e in report if e["source_name"].startswith("ink/bbb"))
    # renamed, and the report says so
    assert long["detail"].startswith("images/ink/" + "b" * 120 + ".png (renamed: ")
    assert "file name of 150 bytes cut to 120" in long["detail"]
    ok = next(e for e in report if e["source_name"] == "ink/ok.png")
    assert ok["detail"] == "images/ink/ok.png"
    _check_store("zipnames")


def test_uploaded_files_with_hostile_names():
    items = [(n, _png(i)) for i, n in enumerate(["ink/ok.png", *sorted(HOSTILE)])]
    result = import_dataset(items, "uploadnames")
    assert result["images"] == 1 and result["rejected"]["unsafe"] == len(HOSTILE)
    _check_report(dataset_report("uploadnames"), {"ink/ok.png"})
    _check_store("uploadnames")


def test_a_tar_with_hostile_names(tmp_path):
    path = tmp_path / "hostile.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for i, name in enumerate(["ink/ok.png", *sorted(HOSTILE)]):
            data = _png(i)
            info = tarfile.TarInfo(name)  # long and non-ASCII names go in PAX headers
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    result = import_dataset(path, "tarnames")
    report = dataset_report("tarnames")
    refused = [e for e in report if e["status"] == "unsafe"]
    # tar's own format ends a name at its NUL: that member arrives as "ink/nul"
    assert result["images"] >= 1 and len(refused) >= len(HOSTILE) - 1
    for e in report:
        assert not any(c in json.dumps(e, ensure_ascii=False) for c in HIDDEN), e
    assert all(e["source_name"] != "ink/nul\x00.exe.png" for e in report)
    _check_store("tarnames")


def test_a_folder_with_hostile_names(tmp_path):
    src = tmp_path / "src"
    (src / "ink").mkdir(parents=True)
    (src / "ink" / "ok.png").write_bytes(_png(0))
    (src / "ink" / "\u202egnp.exe.png").write_bytes(_png(1))
    (src / "ink\u2066").mkdir()
    (src / "ink\u2066" / "iso.png").write_bytes(_png(2))
    (src / "ink" / ("c" * 200 + ".png")).write_bytes(_png(3))  # fits the disk, not the store
    result = import_dataset(src, "foldernames")
    assert result["images"] == 2 and result["rejected"]["unsafe"] == 2
    report = dataset_report("foldernames")
    refused = sorted(e["source_name"] for e in report if e["status"] == "unsafe")
    assert refused == ["ink/\\u202egnp.exe.png", "ink\\u2066"]  # the folder, not walked
    long = next(e for e in report if e["source_name"].startswith("ink/ccc"))
    assert "(renamed: file name of 200 bytes cut to 120)" in long["detail"]
    _check_store("foldernames")


def test_renamed_style_folders_are_reported(tmp_path):
    items = [(" ink /a.png", _png(0)), ("ink/b.png", _png(1)), ("d" * 130 + "/c.png", _png(2))]
    import_dataset(items, "folders")
    report = {e["source_name"]: e for e in dataset_report("folders")}
    assert "style folder name ' ink ' stored as 'ink'" in report[" ink /a.png"]["detail"]
    assert "style folder name of 130 bytes cut to 120" in report["d" * 130 + "/c.png"]["detail"]
    assert "renamed" not in report["ink/b.png"]["detail"]


# -- where sources are: never the server's absolute paths in what an import records ----------------
def test_sources_inside_the_storage_root_are_named_relative_to_it(polychrome_home, tmp_path):
    inbox = polychrome_home / "inbox"
    inbox.mkdir()
    (inbox / "set.zip").write_bytes(_zip_with(["ink/a.png", "ink/b.png"]))
    import_dataset(inbox / "set.zip", "inside")
    assert resolve_dataset("inside").manifest["source"] == "inbox/set.zip"
    (inbox / "broken.zip").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DatasetError) as err:
        import_dataset(inbox / "broken.zip", "broken")
    assert "inbox/broken.zip" in str(err.value) and str(polychrome_home) not in str(err.value)
    (inbox / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as err:
        import_dataset(inbox / "notes.txt", "notes")
    assert str(polychrome_home) not in str(err.value)
    (inbox / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        import_dataset(inbox / "empty", "empty")
    assert "inbox/empty" in str(err.value) and str(polychrome_home) not in str(err.value)
    # a user's own folder elsewhere keeps its absolute path (the CLI shows it to its user)
    outside = tmp_path / "mine"
    (outside / "ink").mkdir(parents=True)
    (outside / "ink" / "a.png").write_bytes(_png(0))
    import_dataset(outside, "outside")
    assert resolve_dataset("outside").manifest["source"] == str(outside.resolve())


def test_a_nul_in_a_source_path_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="NUL"):
        open_source(str(tmp_path / "a\x00b"), LIMITS)


def test_a_damaged_dataset_is_reported_by_its_stored_path(polychrome_home):
    import_dataset([("ink/a.png", _png(0))], "damaged")
    ref = resolve_dataset("damaged")
    (ref.path / "manifest.json").unlink()
    with pytest.raises(NotFound) as err:
        resolve_dataset("damaged")
    assert "datasets/damaged/1" in str(err.value)
    assert str(polychrome_home) not in str(err.value)


def test_zip_member_names_cut_at_nul_by_zipfile_are_seen_whole(tmp_path):
    path = tmp_path / "nul.zip"
    path.write_bytes(_zip_with(["ink/real.png\x00.exe"]))
    with open_source(path, LIMITS) as src:
        members = list(src)
    assert [(m.reason, m.name) for m in members] == [("unsafe", "ink/real.png\\u0000.exe")]
