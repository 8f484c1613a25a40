"""InMemoryLoader: ranges, seeded order, DDP shards, exact resume, balance, transform."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from polychrome.data.augment import diff_augment
from polychrome.data.cache import PackedDataset
from polychrome.data.loader import InMemoryLoader
from polychrome.errors import ConfigError


def make_packed(n: int = 40, domains: int = 3, res: int = 8, seed: int = 0) -> PackedDataset:
    """Rows whose first pixel encodes the row index, so batches reveal which rows they hold."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, res, res), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    images[0, 1] = 0  # make sure both extremes appear
    images[1, 1] = 255
    labels = torch.arange(n) % domains
    return PackedDataset(images=images, labels=labels, domains=[f"d{i}" for i in range(domains)],
                         files=[f"images/d{i % domains}/{i:03d}.png" for i in range(n)],
                         resolution=res)


def rows(x: torch.Tensor) -> list[int]:
    """Row ids back from a float batch (inverse of the [-1, 1] mapping on pixel 0)."""
    return torch.round((x[:, 0, 0, 0] + 1) * 127.5).long().tolist()


def epoch_rows(loader: InMemoryLoader) -> list[int]:
    return [r for x, _ in loader for r in rows(x)]


def test_batches_values_dtypes_and_labels():
    packed = make_packed()
    loader = InMemoryLoader(packed, 8, seed=0)
    assert len(loader) == 5
    batches = list(loader)
    assert len(batches) == 5
    for x, y in batches:
        assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32
        assert y.shape == (8,) and y.dtype == torch.int64
        assert x.min() >= -1.0 and x.max() <= 1.0
        assert torch.equal(y, torch.tensor(rows(x)) % 3)  # labels travel with their rows
    allx = torch.cat([x for x, _ in batches])
    assert allx.min() == -1.0 and allx.max() == 1.0  # 0 -> -1 and 255 -> 1 exactly
    # Exact conversion: the uint8 value v becomes v / 127.5 - 1.
    x0, _ = batches[0]
    src = packed.images[rows(x0)].float() / 127.5 - 1
    assert torch.equal(x0, src)


def test_seeded_order_deterministic_and_epochs_differ():
    packed = make_packed()
    a, b = InMemoryLoader(packed, 8, seed=3), InMemoryLoader(packed, 8, seed=3)
    e0a, e0b = epoch_rows(a), epoch_rows(b)
    assert e0a == e0b and sorted(e0a) == list(range(40))  # a permutation of all rows
    e1a = epoch_rows(a)
    assert sorted(e1a) == list(range(40)) and e1a != e0a  # a new permutation each epoch
    assert epoch_rows(InMemoryLoader(packed, 8, seed=4)) != e0a
    # The order does not depend on, nor move, the global RNG.
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert epoch_rows(InMemoryLoader(packed, 8, seed=3)) == e0a
    assert torch.equal(torch.get_rng_state(), before)
    # shuffle=False walks the rows in order.
    assert epoch_rows(InMemoryLoader(packed, 8, shuffle=False)) == list(range(40))


@pytest.mark.parametrize("n, world, drop_last", [(40, 2, True), (41, 3, True), (41, 3, False)])
def test_ddp_shards_disjoint_and_cover_epoch(n: int, world: int, drop_last: bool):
    packed = make_packed(n=n)
    loaders = [InMemoryLoader(packed, 4, seed=7, rank=r, world_size=world, drop_last=drop_last)
               for r in range(world)]
    assert len({len(ld) for ld in loaders}) == 1  # same number of batches on every rank
    for _ in range(2):  # two epochs
        shards = [epoch_rows(ld) for ld in loaders]
        assert len({len(s) for s in shards}) == 1
        if drop_last:
            # Disjoint, and together the full-batch part of one epoch order.
            flat = [r for s in shards for r in s]
            assert len(flat) == len(set(flat))
            usable = (n // world) // 4 * 4 * world
            assert len(flat) == usable
        else:
            # Every row is seen; only the wrap-around padding repeats.
            flat = [r for s in shards for r in s]
            assert set(flat) == set(range(n))
            assert len(flat) - len(set(flat)) == -n % world
    # Shards are slices of the single-process order for the same seed and epoch.
    single = InMemoryLoader(packed, 4, seed=7, drop_last=drop_last).epoch_indices(0)
    total = loaders[0].rows_per_rank * world
    padded = torch.cat([single, single])[:total]
    for r, ld in enumerate(loaders):
        assert torch.equal(ld.epoch_indices(0), padded[r::world])


def test_resume_from_state_dict_gives_identical_batches():
    packed = make_packed()
    straight = InMemoryLoader(packed, 8, seed=11)
    ref = [rows(x) for x, _ in itertools.islice(straight.forever(), 17)]  # crosses 3 epochs

    first = InMemoryLoader(packed, 8, seed=11)
    got = [rows(x) for x, _ in itertools.islice(first.forever(), 7)]
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    assert state == {"epoch": 1, "position": 2}
    resumed = InMemoryLoader(packed, 8, seed=11)
    resumed.load_state_dict(state)
    got += [rows(x) for x, _ in itertools.islice(resumed.forever(), 10)]
    assert got == ref
    # Iterating a resumed loader gives the rest of that epoch only.
    part = InMemoryLoader(packed, 8, seed=11)
    part.load_state_dict({"epoch": 0, "position": 3})
    assert len(list(part)) == 2 and part.state_dict() == {"epoch": 1, "position": 0}
    with pytest.raises(ConfigError):
        part.load_state_dict({"epoch": 0, "position": 5})
    with pytest.raises(ConfigError):
        part.load_state_dict({"epoch": "x"})


def test_transform_is_applied_on_the_float_batch():
    packed = make_packed()
    seen = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.dtype)
        return diff_augment(x, "translation", generator=torch.Generator().manual_seed(0))

    plain = next(iter(InMemoryLoader(packed, 8, seed=1)))[0]
    aug = next(iter(InMemoryLoader(packed, 8, seed=1, transform=spy)))[0]
    assert seen == [torch.float32] and aug.shape == plain.shape and not torch.equal(aug, plain)


def test_balanced_sampling_evens_out_domains():
    # 90 images of d0, 10 of d1: balanced sampling draws each domain about half the time.
    images = torch.zeros((100, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0] * 90 + [1] * 10)
    packed = PackedDataset(images=images, labels=labels, domains=["d0", "d1"],
                           files=[f"images/x/{i}.png" for i in range(100)], resolution=4)
    loader = InMemoryLoader(packed, 50, seed=0, balance=True)
    ys = torch.cat([y for _, y in itertools.islice(loader.forever(), 40)])
    share = (ys == 1).float().mean().item()
    assert 0.45 < share < 0.55
    plain = torch.cat([y for _, y in itertools.islice(InMemoryLoader(packed, 50).forever(), 40)])
    assert (plain == 1).float().mean().item() == pytest.approx(0.1)
    # Balanced order is seeded too.
    again = InMemoryLoader(packed, 50, seed=0, balance=True)
    assert torch.equal(torch.cat([y for _, y in itertools.islice(again.forever(), 40)]), ys)


def test_bad_configurations_are_config_errors():
    packed = make_packed(n=10)
    with pytest.raises(ConfigError):
        InMemoryLoader(packed, 16)  # no full batch with drop_last
    assert len(InMemoryLoader(packed, 16, drop_last=False)) == 1
    with pytest.raises(ConfigError):
        InMemoryLoader(packed, 2, rank=2, world_size=2)
    with pytest.raises(ConfigError):
        InMemoryLoader(packed, 0)
