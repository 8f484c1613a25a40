"""Packed cache: build, reuse, staleness, geometry, and the stem-aligned split."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from polychrome.data.cache import (
    PackedDataset,
    build_cache,
    cache_paths,
    cache_root,
    load_packed,
    square_resize,
)
from polychrome.errors import ConfigError, DatasetError, NotFound
from polychrome.imageio import decode_image, encode_png


def write_dataset(home: Path, name: str, images: dict[str, dict[str, np.ndarray]],
                  version: int = 1) -> Path:
    """Lay out $HOME/datasets/<name>/<version>/ exactly as the store does.

    images: {domain: {stem: (H, W, 3) uint8}}. Returns the version dir.
    """
    root = home / "datasets" / name / str(version)
    entries = []
    for domain in sorted(images):
        for stem in sorted(images[domain]):
            arr = images[domain][stem]
            rel = f"images/{domain}/{stem}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(encode_png(arr))
            entries.append({"file": rel, "domain": domain, "source_name": f"{domain}/{stem}.png",
                            "sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "phash": "0" * 16,
                            "width": arr.shape[1], "height": arr.shape[0]})
    manifest = {"name": name, "version": version, "created": "2024-01-01T00:00:00",
                "source": "test", "domains": {d: len(v) for d, v in images.items()},
                "rejected": {}, "images": entries}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def random_images(domains: dict[str, int], seed: int = 0, stems: list[str] | None = None,
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Random non-square RGB images; domain d gets n stems (shared names across domains)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for d, n in domains.items():
        names = stems[:n] if stems else [f"img{i:03d}" for i in range(n)]
        out[d] = {s: rng.integers(0, 256, size=(int(rng.integers(20, 40)),
                                              int(rng.integers(20, 40)), 3), dtype=np.uint8)
                  for s in names}
    return out


@pytest.fixture
def small_dataset(polychrome_home: Path) -> Path:
    return write_dataset(polychrome_home, "toy", random_images({"b": 5, "a": 3, "c": 4}))


def test_build_shapes_labels_and_metadata(small_dataset: Path):
    packed = load_packed(small_dataset, 16)
    assert packed.images.shape == (12, 3, 16, 16) and packed.images.dtype == torch.uint8
    assert packed.labels.shape == (12,) and packed.labels.dtype == torch.int64
    assert packed.domains == ["a", "b", "c"]  # sorted
    manifest = json.loads((small_dataset / "manifest.json").read_text())
    assert packed.domain_counts() == manifest["domains"]
    # Each row's label matches its file's domain folder.
    for f, y in zip(packed.files, packed.labels.tolist(), strict=True):
        assert f.split("/")[1] == packed.domains[y]
    st, js = cache_paths(small_dataset, 16, "crop")
    assert st == cache_root(small_dataset) / "16-crop.safetensors" and st.is_file()
    meta = json.loads(js.read_text())
    assert meta["domains"] == packed.domains and meta["files"] == packed.files
    assert meta["fit"] == "crop" and meta["resolution"] == 16
    assert meta["manifest_sha256"] == hashlib.sha256(
        (small_dataset / "manifest.json").read_bytes()).hexdigest()


def test_rows_match_decoded_resized_pixels(small_dataset: Path):
    packed = load_packed(small_dataset, 16, fit="pad")
    for i in (0, 5, 11):
        expect = square_resize(decode_image(small_dataset / packed.files[i]), 16, "pad")
        assert torch.equal(packed.images[i], torch.from_numpy(expect).permute(2, 0, 1))


def test_cache_reused_then_rebuilt_when_manifest_changes(small_dataset: Path):
    load_packed(small_dataset, 16)
    st, js = cache_paths(small_dataset, 16, "crop")
    # Back-date both files: a rebuild would give them a fresh mtime whatever the clock tick.
    past = 1_000_000_000 * 10**9
    for f in (st, js):
        os.utime(f, ns=(past, past))
    again = load_packed(small_dataset, 16)
    assert os.stat(st).st_mtime_ns == past and os.stat(js).st_mtime_ns == past  # reused
    assert len(again) == 12

    # Drop one image from the manifest: the cache is stale and must be rebuilt.
    manifest = json.loads((small_dataset / "manifest.json").read_text())
    manifest["images"] = manifest["images"][1:]
    manifest["domains"]["a"] -= 1
    (small_dataset / "manifest.json").write_text(json.dumps(manifest))
    rebuilt = load_packed(small_dataset, 16)
    assert len(rebuilt) == 11 and rebuilt.domain_counts()["a"] == 2
    assert os.stat(st).st_mtime_ns != past and os.stat(js).st_mtime_ns != past
    # A different resolution/fit is its own entry; the first one stays.
    load_packed(small_dataset, 8, fit="pad")
    assert cache_paths(small_dataset, 8, "pad")[0].is_file() and st.is_file()


def test_corrupt_cache_file_is_rebuilt(small_dataset: Path):
    first = load_packed(small_dataset, 8).images.clone()
    st, _ = cache_paths(small_dataset, 8, "crop")
    garbage = st.with_name("garbage")
    garbage.write_bytes(b"not a safetensors file")
    os.replace(garbage, st)  # replaced, as our atomic writes do, never edited in place
    again = load_packed(small_dataset, 8)
    assert torch.equal(first, again.images)


def test_load_by_name_and_latest_version(polychrome_home: Path):
    write_dataset(polychrome_home, "multi", random_images({"x": 2}), version=1)
    write_dataset(polychrome_home, "multi", random_images({"x": 3, "y": 1}), version=2)
    assert len(load_packed("multi", 8)) == 4  # latest
    assert len(load_packed("multi", 8, version=1)) == 2
    assert len(load_packed("multi:1", 8)) == 2
    with pytest.raises(NotFound):
        load_packed("nope", 8)
    with pytest.raises(NotFound):
        load_packed("multi", 8, version=7)


def test_bad_arguments_and_broken_datasets(small_dataset: Path, polychrome_home: Path):
    with pytest.raises(ConfigError):
        load_packed(small_dataset, 16, fit="stretch")
    with pytest.raises(ConfigError):
        load_packed(small_dataset, 0)
    # A manifest entry whose file is gone is a DatasetError naming the file.
    (small_dataset / "images" / "a" / "img000.png").unlink()
    with pytest.raises(DatasetError, match="img000"):
        build_cache(small_dataset, 8)
    # A manifest pointing outside its dataset is refused.
    evil = write_dataset(polychrome_home, "evil", random_images({"a": 1}))
    manifest = json.loads((evil / "manifest.json").read_text())
    manifest["images"][0]["file"] = "../../toy/1/images/b/img000.png"
    (evil / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="outside"):
        build_cache(evil, 8)


def _bands(h: int, w: int) -> np.ndarray:
    """Red | green | blue bands along the long side: quarter, half, quarter."""
    long = max(h, w)
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    q = long // 4
    if w >= h:
        arr[:, :q, 0] = 255
        arr[:, q:long - q, 1] = 255
        arr[:, long - q:, 2] = 255
    else:
        arr[:q, :, 0] = 255
        arr[q:long - q, :, 1] = 255
        arr[long - q:, :, 2] = 255
    return arr


@pytest.mark.parametrize("shape", [(32, 64), (64, 32)])
def test_crop_vs_pad_geometry(polychrome_home: Path, shape: tuple[int, int]):
    arr = _bands(*shape)  # the long side is twice the short side
    root = write_dataset(polychrome_home, "geo", {"d": {"pattern": arr}})
    crop = load_packed(root, 16, fit="crop").images[0].permute(1, 2, 0).numpy().astype(int)
    pad = load_packed(root, 16, fit="pad").images[0].permute(1, 2, 0).numpy().astype(int)
    green = np.array([0, 255, 0])
    # Crop keeps the centred square = exactly the green half.
    assert np.abs(crop - green).max() <= 2
    # Pad: white margins across the short side, bands along the long side.
    p = pad if shape[1] >= shape[0] else pad.transpose(1, 0, 2)  # make the long side columns
    assert np.abs(p[0:2] - 255).max() <= 2 and np.abs(p[14:16] - 255).max() <= 2
    assert np.abs(p[8, 0] - [255, 0, 0]).max() <= 2
    assert np.abs(p[8, 8] - green).max() <= 2
    assert np.abs(p[8, 15] - [0, 0, 255]).max() <= 2


def test_split_by_stem_is_disjoint_aligned_and_stable(polychrome_home: Path):
    stems = [f"{0x1F600 + i:x}" for i in range(60)]
    # Style "c" lacks a few stems: the split must still align by name.
    root = write_dataset(polychrome_home, "emoji",
                         random_images({"a": 60, "b": 60, "c": 50}, stems=stems))
    packed = load_packed(root, 8)
    train, held = packed.split("train"), packed.split("heldout")
    assert packed.split("all") is packed
    assert len(train) + len(held) == len(packed) and len(held) > 0
    assert not set(train.files) & set(held.files)

    def stems_by_domain(p: PackedDataset) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for f, y in zip(p.files, p.labels.tolist(), strict=True):
            out.setdefault(p.domains[y], set()).add(Path(f).stem)
        return out

    held_stems = stems_by_domain(held)
    assert held_stems["a"] == held_stems["b"]  # the same emoji held out in every style
    assert held_stems["c"] == held_stems["a"] & set(stems[:50])
    assert not held_stems["a"] & stems_by_domain(train)["a"]
    # Stable: same call, same answer; rows keep their pixels and labels.
    assert packed.split("heldout").files == held.files
    i = packed.files.index(held.files[0])
    assert torch.equal(held.images[0], packed.images[i]) and held.labels[0] == packed.labels[i]
    # The fraction is roughly honoured and another seed gives another split.
    assert 1 <= len(held_stems["a"]) <= 15
    assert packed.split("heldout", seed=1).files != held.files
    assert len(packed.split("heldout", heldout_fraction=0.0)) == 0
    with pytest.raises(ConfigError):
        packed.split("validation")


def test_dataset_imported_by_the_store_loads_by_name(polychrome_home: Path, tmp_path: Path):
    from polychrome.persistence import datasets as store
    from polychrome.settings import get_settings

    src = tmp_path / "src"
    for domain, imgs in random_images({"ink": 3, "paint": 2}, seed=5).items():
        (src / domain).mkdir(parents=True)
        for stem, arr in imgs.items():
            big = np.repeat(np.repeat(arr, 2, axis=0), 2, axis=1)  # >= the store's min size
            (src / domain / f"{stem}.png").write_bytes(encode_png(big))
    store.import_dataset(src, "imported")
    packed = load_packed("imported", 8)
    assert packed.domains == ["ink", "paint"] and packed.domain_counts() == {"ink": 3, "paint": 2}
    ref = store.resolve_dataset("imported")
    st = cache_paths(ref.path, 8, "crop")[0]
    assert st.is_file()
    # The store may be a shared filesystem: caches go to this machine's cache directory.
    assert st.is_relative_to(get_settings().cache) and not st.is_relative_to(ref.path)


def test_stem_partners_find_the_same_file_name_in_every_style():
    files = ["images/a/x.png", "images/a/y.png", "images/b/y.png", "images/b/x.png",
             "images/c/x.png", "images/b/z.png"]
    labels = torch.tensor([0, 0, 1, 1, 2, 1])
    packed = PackedDataset(images=torch.zeros(6, 3, 4, 4, dtype=torch.uint8), labels=labels,
                           domains=["a", "b", "c"], files=files, resolution=4)
    want = torch.tensor([[0, 3, 4], [1, 2, -1], [1, 2, -1], [0, 3, 4], [0, 3, 4],
                         [-1, 5, -1]])
    assert torch.equal(packed.stem_partners(), want)
    # Rows index the dataset they came from: a subset re-numbers them.
    sub = packed.subset([5, 2, 1])
    assert torch.equal(sub.stem_partners(), torch.tensor([[-1, 0, -1], [2, 1, -1], [2, 1, -1]]))
    assert sub.subset([]).stem_partners().shape == (0, 3)
