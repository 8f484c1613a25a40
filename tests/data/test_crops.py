"""Crops mode: pictures packed at their own size, random crops as a pure function of a key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polychrome.data.cache import load_packed
from polychrome.data.crops import PackedCrops, crops_paths, load_crops_dir
from polychrome.data.loader import InMemoryLoader
from polychrome.errors import ConfigError

SIZES = [(40, 64), (64, 40), (33, 47), (90, 90), (24, 30), (100, 52)]  # (h, w)


def make_sized_dataset(root: Path, *, domains=("ink", "neon"), aligned: bool = True) -> Path:
    """images/<domain>/*.png of varied sizes and aspects; same names across styles when
    `aligned` (each subject drawn in every style)."""
    rng = np.random.default_rng(0)
    entries = []
    for d_i, domain in enumerate(domains):
        (root / "images" / domain).mkdir(parents=True, exist_ok=True)
        for i, (h, w) in enumerate(SIZES):
            yy, xx = np.mgrid[0:h, 0:w]
            arr = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)),
                            np.full((h, w), 60 + 120 * d_i)], -1).astype(np.uint8)
            arr = (arr // 2 + rng.integers(0, 40, arr.shape)).astype(np.uint8)
            rel = f"images/{domain}/pic-{i if aligned else i + 10 * d_i:02d}.png"
            Image.fromarray(arr).save(root / rel)
            entries.append({"file": rel, "domain": domain, "width": w, "height": h})
    (root / "manifest.json").write_text(json.dumps(
        {"name": "sized", "version": 1, "domains": {d: len(SIZES) for d in domains},
         "images": entries}))
    return root


@pytest.fixture
def sized(tmp_path) -> Path:
    return make_sized_dataset(tmp_path / "sized" / "1")


def test_store_keeps_aspect_and_shrinks_to_the_scale(sized):
    packed = load_crops_dir(sized, 16, (16, 48))
    assert isinstance(packed, PackedCrops) and packed.fit == "crops" and len(packed) == 12
    for row in range(len(packed)):
        h, w = packed.picture(row).shape[1:]
        oh, ow = SIZES[row % len(SIZES)]
        assert min(h, w) == min(min(oh, ow), 48)  # shorter side capped at hi, never upscaled
        assert abs(h / w - oh / ow) < 0.05  # aspect kept
    st, js = crops_paths(sized, 48)
    assert st.is_file() and js.is_file()
    again = load_crops_dir(sized, 16, (16, 48))  # fresh: loaded, not rebuilt
    assert torch.equal(again.pixels, packed.pixels)
    assert st.stat().st_mtime_ns == crops_paths(sized, 48)[0].stat().st_mtime_ns


def test_crops_are_a_pure_function_of_rows_and_key(sized):
    packed = load_packed(sized, 16, "crops", scale=[16, 48])
    rows = torch.tensor([0, 3, 5, 7, 11])
    a, b = packed.gather(rows, 123), packed.gather(rows, 123)
    assert a.shape == (5, 3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, packed.gather(rows, 124))
    view = packed.images  # fixed centred view for evaluators and grids
    assert view.shape == (12, 3, 16, 16) and torch.equal(view, packed.images)


def test_same_named_pictures_get_the_same_region(sized):
    """The paired loss compares a crop with the same region of the partner picture."""
    packed = load_crops_dir(sized, 16, (16, 48))
    partners = packed.stem_partners()
    rows = torch.arange(len(SIZES))  # style 0
    other = partners[rows, 1]
    assert bool((other >= 0).all())
    a, b = packed.gather(rows, 7), packed.gather(other, 7)
    # the test pictures encode position in R and G: the same region gives the same ramps
    diff = (a[:, :2].float() - b[:, :2].float()).abs().mean()
    assert diff < 25, float(diff)


def test_subset_and_split_keep_pictures(sized):
    packed = load_crops_dir(sized, 16, (16, 48))
    sub = packed.subset([4, 1])
    assert sub.files == [packed.files[4], packed.files[1]]
    assert torch.equal(sub.picture(0), packed.picture(4))
    assert torch.equal(sub.picture(1), packed.picture(1))
    held, train = packed.split("heldout"), packed.split("train")
    assert len(held) + len(train) == len(packed) and isinstance(train, PackedCrops)


def test_loader_batches_resume_exactly(sized):
    packed = load_crops_dir(sized, 16, (16, 48))
    a = InMemoryLoader(packed, 4, seed=3)
    first = [a.next_batch()[0] for _ in range(3)]
    state = a.state_dict()
    rest = [a.next_batch()[0] for _ in range(4)]
    b = InMemoryLoader(packed, 4, seed=3)
    b.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(rest, [b.next_batch()[0] for _ in range(4)],
                                                   strict=True))
    assert first[0].shape == (4, 3, 16, 16) and float(first[0].abs().max()) <= 1.0


def test_bad_scale_is_a_clear_error(sized):
    with pytest.raises(ConfigError, match="scale"):
        load_crops_dir(sized, 16, (8, 48))  # lo below the crop side
    with pytest.raises(ConfigError, match="scale"):
        load_crops_dir(sized, 16, (64, 32))
