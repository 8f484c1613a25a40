"""`polychrome data ...` through the real entry point: JSON contract, messages, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from imagegen import make_png
from polychrome.cli.main import main
from polychrome.imageio import decode_image


@pytest.fixture
def styles(tmp_path) -> Path:
    src = tmp_path / "styles"
    for i, (style, stem) in enumerate([("noto", "a"), ("noto", "b"), ("tw", "a"), ("tw", "b")]):
        (src / style).mkdir(parents=True, exist_ok=True)
        (src / style / f"{stem}.png").write_bytes(make_png(40, 40, seed=i))
    (src / "tw" / "notes.png").write_text("not an image")
    return src


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_json(out: str) -> dict:
    lines = out.splitlines()
    assert len(lines) == 1, out
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def test_import_json_and_human(capsys, styles):
    code, out, _ = run(capsys, "data", "import", str(styles), "--name", "emo", "--json")
    assert code == 0
    assert one_json(out) == {
        "name": "emo", "version": 1, "images": 4, "domains": {"noto": 2, "tw": 2},
        "rejected": {"corrupt": 0, "too_small": 0, "duplicate": 0, "unsupported": 1, "unsafe": 0}}
    code, out, _ = run(capsys, "data", "import", str(styles), "--name", "emo", "--min-size", "41")
    assert code == 2  # every image is now too small: an error, and no version 2 is left
    code, out, _ = run(capsys, "data", "import", str(styles), "--name", "emo")
    assert code == 0
    assert out.startswith("imported emo version 2: 4 images in 2 domains")
    assert "unsupported 1" in out


def test_list_show_preview_export_remove(capsys, styles, tmp_path):
    assert run(capsys, "data", "import", str(styles), "--name", "emo", "--json")[0] == 0
    code, out, _ = run(capsys, "data", "list", "--json")
    [entry] = one_json(out)["datasets"]
    assert (entry["name"], entry["latest_version"], entry["versions"], entry["images"],
            entry["domains"]) == ("emo", 1, [1], 4, {"noto": 2, "tw": 2})

    code, out, _ = run(capsys, "data", "show", "emo", "--version", "1", "--json", "--report")
    info = one_json(out)
    assert code == 0 and info["domains"] == {"noto": 2, "tw": 2} and info["rejected"]["unsupported"] == 1
    assert info["sizes"]["width"] == {"min": 40, "median": 40, "max": 40}
    assert Path(info["path"]).is_dir() and info["source"] == str(styles.resolve())
    assert {e["source_name"]: e["status"] for e in info["report"]}["tw/notes.png"] == "unsupported"
    code, out, _ = run(capsys, "data", "show", "emo", "--report")
    assert "tw/notes.png" in out and "unsupported" in out

    grid = tmp_path / "grid.png"
    code, out, _ = run(capsys, "data", "preview", "emo", "-o", str(grid), "--per-domain", "2")
    assert code == 0 and decode_image(grid).shape[0] == 2 * (64 + 4) + 4

    backup = tmp_path / "backup.zip"
    code, out, _ = run(capsys, "data", "export", "emo", "-o", str(backup), "--json")
    assert code == 0 and one_json(out) == {"path": str(backup)}
    assert "noto/a.png" in zipfile.ZipFile(backup).namelist()
    code, out, _ = run(capsys, "data", "import", str(backup), "--name", "emo2", "--json")
    assert one_json(out)["domains"] == {"noto": 2, "tw": 2}

    code, out, _ = run(capsys, "data", "remove", "emo")
    assert code == 0 and out.strip() == "removed emo version 1"
    code, out, _ = run(capsys, "data", "list", "--json")
    assert [d["name"] for d in one_json(out)["datasets"]] == ["emo2"]


@pytest.mark.parametrize("argv", [
    ["data", "import", "/no/such/folder", "--name", "x"],
    ["data", "import", "{styles}", "--name", "bad name"],
    ["data", "show", "nothing"],
    ["data", "remove", "nothing", "--version", "3"],
    ["data", "export", "nothing", "-o", "x.zip"],
])
def test_user_errors_are_one_line(capsys, styles, argv):
    code, out, err = run(capsys, *[a.format(styles=styles) for a in argv])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_real_process(styles, tmp_path):
    """The installed entry point: stdout is exactly one JSON object; a bad SRC is exit 2
    with a single "error:" line and no traceback."""
    cmd = [sys.executable, "-m", "polychrome", "data", "import"]
    env = dict(os.environ)
    bad = subprocess.run([*cmd, str(tmp_path / "missing.zip"), "--name", "x"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr
    ok = subprocess.run([*cmd, str(styles), "--name", "proc", "--json"], env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert one_json(ok.stdout)["images"] == 4
