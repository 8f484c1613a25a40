"""Batched restyle (pipelines/restyle_batch.py): the same pictures as one at a time, within
float tolerance, for every translation family, size mix, tiling and option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from polychrome.cli.main import main
from polychrome.errors import PolychromeError
from polychrome.imageio import decode_image, read_png_metadata
from polychrome.persistence.models import load_model
from polychrome.pipelines.restyle_batch import Job, plan_batches
from polychrome.pipelines.style import Restyler, load_picture, restyle, restyle_each

from .stylehelpers import picture, save_tiny, write_picture
from .test_native_size import save_native

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def whole_dir(tmp_path_factory) -> Path:
    return save_tiny("stargan", tmp_path_factory.mktemp("models") / "star")


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory) -> Path:
    return save_native("stargan", tmp_path_factory.mktemp("models") / "native-star")


def assert_close(batched, alone) -> None:
    """Equal to the one-at-a-time render within float tolerance: the same metadata and
    size, every channel value within one step of 255, and almost all of them equal."""
    assert len(batched) == len(alone)
    for b, a in zip(batched, alone, strict=True):
        assert b.metadata == a.metadata
        assert b.array.shape == a.array.shape and b.array.dtype == np.uint8
        diff = np.abs(b.array.astype(np.int16) - a.array.astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_whole_model_batches_equal_one_at_a_time(whole_dir):
    model = load_model(str(whole_dir))
    pics = [picture(i, shape) for i, shape in enumerate([(24, 24), (20, 40), (24, 24),
                                                         (31, 17), (16, 16)])]
    kw = dict(style="neon", seed=3, variations=3)
    alone = restyle(model, pics, batch_size=1, **kw)
    batched = restyle(model, pics, batch_size=4, **kw)
    assert len(batched) == 15 and [im.metadata["index"] for im in batched] == \
        [str(i) for i in range(15)]
    assert_close(batched, alone)
    assert len({im.array.tobytes() for im in batched[:3]}) == 3  # variations differ
    # pixel blend and a strength below 1 (the source's own code) per picture
    kw = dict(style="pastel", seed=1, strength=0.5, source_style="ink", pixel_blend=0.25)
    assert_close(restyle(model, pics, batch_size=8, **kw), restyle(model, pics, **kw))
    # a reference picture's style for every input
    ref = picture(9, (30, 30))
    assert_close(restyle(model, pics, reference=ref, batch_size=8),
                 restyle(model, pics, reference=ref))


def test_more_inputs_than_the_reference_memo(whole_dir):
    # a reference and strength < 1 (each source's own code is a reference too) over more
    # pictures than a Restyler remembers: every recipe is built before any is rendered
    from polychrome.pipelines.restyler import MEMO_SIZE

    model = load_model(str(whole_dir))
    pics = [picture(100 + i, (16, 16)) for i in range(MEMO_SIZE + 6)]
    kw = dict(reference=picture(9, (30, 30)), style="neon", strength=0.5, source_style="ink")
    seen: list[tuple[int, int]] = []
    # batch 4: inputs are read in windows of 32 (WINDOW_BATCHES batches)
    batched = restyle(model, pics, batch_size=4, progress=lambda d, t: seen.append((d, t)),
                      **kw)
    assert [im.metadata["index"] for im in batched] == [str(i) for i in range(len(pics))]
    assert seen[-1] == (len(pics), len(pics)) and len(seen) == -(-len(pics) // 4)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})
    # batch 32: all of them in one window, built before any is rendered
    assert len(restyle(model, pics, batch_size=32, **kw)) == len(pics)
    for b, a in zip(batched[-3:], restyle(model, pics[-3:], **kw), strict=True):
        assert b.metadata["recipe"] == a.metadata["recipe"]
        assert np.abs(b.array.astype(np.int16) - a.array.astype(np.int16)).max() <= 1


def test_native_sizes_group_and_tiles_agree(native_dir, monkeypatch):
    model = load_model(str(native_dir))
    pics = [picture(i, shape) for i, shape in enumerate([(33, 45), (40, 40), (33, 45),
                                                         (40, 40), (33, 45), (17, 70)])]
    alone = restyle(model, pics, style="neon", seed=2)
    batched = restyle(model, pics, style="neon", seed=2, batch_size=16)
    assert [im.array.shape[:2] for im in batched] == [p.shape[:2] for p in pics]
    assert_close(batched, alone)
    # the 17 x 70 picture is alone in its batch: the one-at-a-time path, bit for bit
    assert batched[5].array.tobytes() == alone[5].array.tobytes()
    # above the tiling budget: each batch runs through the tiling engine, statistics
    # per picture, and still equals the tiled one-at-a-time render
    monkeypatch.setenv("POLYCHROME_TILE_MAX_PIXELS", "1024")
    monkeypatch.setenv("POLYCHROME_TILE_STATS_MAX_PIXELS", str(10**6))
    monkeypatch.setenv("POLYCHROME_TILE_SIDE", "32")
    big = [picture(10 + i, (72, 88)) for i in range(3)]
    r = Restyler(model)
    assert r.tile_settings().max_pixels == 1024
    alone = restyle(model, big, style="ink", seed=0)
    batched = restyle(model, big, style="ink", seed=0, batch_size=3, restyler=r)
    assert int(batched[0].metadata["tiles"]) > 1
    assert_close(batched, alone)


def test_plan_batches_by_size_and_pixel_budget(native_dir, monkeypatch):
    model = load_model(str(native_dir))
    r = Restyler(model)
    jobs = []
    for i, shape in enumerate([(32, 32), (48, 32), (32, 32), (32, 32), (48, 32)]):
        r.source = load_picture(model, picture(i, shape))
        jobs.append(Job(r.source, r.build([("ink", 1.0)], op="restyle"), i))
    assert plan_batches(r, jobs, 2) == [[0, 2], [3], [1, 4]]
    monkeypatch.setenv("POLYCHROME_TILE_MAX_PIXELS", str(32 * 32 * 2))
    assert plan_batches(r, jobs, 8) == [[0, 2], [3], [1], [4]]  # 2 pictures of 32x32 fit


def test_cyclegan_batches_equal_one_at_a_time(tmp_path):
    for directory in (save_tiny("cyclegan", tmp_path / "whole"),
                      save_native("cyclegan", tmp_path / "native")):
        model = load_model(str(directory))
        pics = [picture(i, (27, 31)) for i in range(4)]
        assert_close(restyle(model, pics, style="neon", batch_size=4),
                     restyle(model, pics, style="neon"))


def test_a_bad_input_fails_alone(whole_dir, tmp_path):
    model = load_model(str(whole_dir))
    good = [write_picture(tmp_path / f"{i}.png", i) for i in range(2)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    results = restyle_each(model, [good[0], broken, good[1]], style="ink", batch_size=8)
    assert isinstance(results[1], PolychromeError) and "broken.png" in str(results[1])
    assert [len(r) for r in (results[0], results[2])] == [1, 1]
    with pytest.raises(PolychromeError, match="broken.png"):
        restyle(model, [good[0], broken], style="ink", batch_size=8)
    with pytest.raises(PolychromeError, match="unknown style"):  # the request, not one input
        restyle_each(model, [good[0], broken], style="sepia", batch_size=8)
    with pytest.raises(PolychromeError, match="batch size"):
        restyle(model, good, style="ink", batch_size=0)


def test_cli_restyles_a_folder_in_batches(whole_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    for i in range(5):
        write_picture(folder / f"pic{i}.png", i, (24, 24) if i % 2 else (20, 30))
    (folder / "notes.txt").write_text("not a picture")  # skipped by suffix
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    extra = write_picture(tmp_path / "extra.jpg.png", 7)
    out = tmp_path / "out"
    code = main(["restyle", str(whole_dir), str(folder), str(extra), str(extra), "--style",
                 "pastel", "--seed", "4", "--batch", "4", "-o", str(out), "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == 2  # one input failed; the others are written
    res = json.loads(stdout)  # exactly one JSON object
    assert res["failed"] == 1 and res["batch_size"] == 4 and len(res["images"]) == 7
    results = res["results"]
    assert [Path(r["input"]).name for r in results] == \
        [f"pic{i}.png" for i in range(5)] + ["zz-broken.png"] + ["extra.jpg.png"] * 2
    assert results[5]["code"] and "zz-broken.png" in results[5]["error"]
    lines = stderr.strip().splitlines()  # the input's error, then what was done
    assert len(lines) == 2 and lines[0].startswith("error: zz-broken.png")
    assert lines[1] == ("error: 1 of 8 input(s) could not be restyled (above); the other 7 "
                        "image(s) are written")
    names = [Path(r["images"][0]).name for r in results if "images" in r]
    assert names == [f"pic{i}-restyle-pastel-seed4.png" for i in range(5)] + \
        ["extra.jpg-restyle-pastel-seed4.png", "extra.jpg-restyle-pastel-seed4-1.png"]
    inputs = [folder / f"pic{i}.png" for i in range(5)] + [extra, extra]
    alone = restyle(str(whole_dir), [str(p) for p in inputs], style="pastel", seed=4)
    for want, r in zip(alone, [r for r in results if "images" in r], strict=True):
        got = decode_image(r["images"][0])
        assert np.abs(got.astype(np.int16) - want.array.astype(np.int16)).max() <= 1
        assert read_png_metadata(r["images"][0])["recipe"] == want.metadata["recipe"]

    # nothing readable: the one-line error of the first input, nothing written
    code = main(["restyle", str(whole_dir), str(folder / "zz-broken.png"), "--style", "ink",
                 "-o", str(tmp_path / "o2")])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == "" and stderr.startswith("error: zz-broken.png")
    code = main(["restyle", str(whole_dir), str(tmp_path / "missing.png"), "--style", "ink",
                 "-o", str(tmp_path / "o3")])
    assert code == 2 and not (tmp_path / "o3").exists()
    assert "missing.png" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["restyle", str(whole_dir), str(empty), "--style", "ink", "-o",
                 str(tmp_path / "o4")])
    assert code == 2 and "holds no pictures" in capsys.readouterr().err
