"""In-memory batch loader over a `PackedDataset`: seeded, shardable, exactly resumable.

Batches are gathered with one `index_select` from the uint8 tensor (no per-sample
Python), moved to the device as uint8 (4x fewer bytes than float), and only then
converted to float in [-1, 1].

Determinism: the order of epoch `e` is a function of (seed, e) alone, computed
with its own `torch.Generator`, so it does not touch (or depend on) the global
RNG. Under DDP every rank computes the same order and takes its own strided
shard; `state_dict()` = {"epoch", "position"} pins the next batch exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..errors import ConfigError, DatasetError
from .cache import PackedDataset

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]  # (B, 3, R, R) float in [-1, 1], (B,) int64
Transform = Callable[[torch.Tensor], torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed for (seed, epoch): nearby pairs give unrelated streams."""
    digest = hashlib.sha256(f"polychrome-loader:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 in [0, 255] -> float32 in [-1, 1] (0 -> -1, 255 -> 1 exactly)."""
    return x.to(torch.float32).div_(127.5).sub_(1.0)


class InMemoryLoader:
    """Iterate `(x, y)` batches of a PackedDataset; `for b in loader` = rest of one epoch.

    x: (B, 3, R, R) float32 in [-1, 1] on `device` (after `transform`, if any);
    y: (B,) int64 domain labels on `device`.

    balance=True samples domains uniformly (then an image uniformly within the
    domain, with replacement) instead of permuting the rows; an epoch still has N
    draws. Empty domains are skipped.
    """

    def __init__(self, packed: PackedDataset, batch_size: int, *, device: str | torch.device = "cpu",
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True, rank: int = 0,
                 world_size: int = 1, transform: Transform | None = None,
                 pin_memory: bool = False, balance: bool = False):
        n = len(packed)
        if n == 0:
            raise DatasetError("cannot load batches from an empty dataset", code="empty_dataset")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, "
                              f"world_size={world_size}")
        self.packed = packed
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.transform = transform
        self.balance = balance
        # Pinned host memory only helps (and only works) for copies to an accelerator.
        self.pin_memory = pin_memory and self.device.type != "cpu" and torch.cuda.is_available()
        # Every rank gets the same number of rows per epoch: drop_last truncates the
        # epoch order to a multiple of world_size, otherwise it wraps around to pad.
        self.rows_per_rank = n // world_size if drop_last else math.ceil(n / world_size)
        if drop_last:
            self.batches_per_epoch = self.rows_per_rank // self.batch_size
        else:
            self.batches_per_epoch = math.ceil(self.rows_per_rank / self.batch_size)
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"dataset too small: {n} images over {world_size} rank(s) give no full batch "
                f"of {batch_size}; lower batch_size or use drop_last=False")
        if balance:
            counts = torch.bincount(packed.labels, minlength=packed.num_domains)
            self._domain_rows = torch.argsort(packed.labels, stable=True)  # rows grouped by domain
            self._domain_start = torch.cumsum(counts, 0) - counts
            self._domain_count = counts
            self._present = torch.nonzero(counts).flatten()  # domains that have images
        self.last_key = 0  # seed of the last batch's crops (crops-mode data)
        self._epoch = 0
        self._position = 0  # batches of the current epoch already delivered on this rank
        self._order_epoch = -1
        self._order = torch.empty(0, dtype=torch.int64)

    # -- order ---------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's row indices for `epoch`: (rows_per_rank,) int64, same on every call."""
        if epoch == self._order_epoch:
            return self._order
        n = len(self.packed)
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        if self.balance:
            d = self._present[torch.randint(len(self._present), (n,), generator=g)]
            within = (torch.rand(n, generator=g, dtype=torch.float64)
                      * self._domain_count[d]).long()
            within = torch.minimum(within, self._domain_count[d] - 1)
            order = self._domain_rows[self._domain_start[d] + within]
        elif self.shuffle:
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.rows_per_rank * self.world_size
        if total > n:  # pad by wrapping around (only without drop_last)
            order = torch.cat([order, order[: total - n]])
        shard = order[:total][self.rank::self.world_size].contiguous()
        self._order_epoch, self._order = epoch, shard
        return shard

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """Rows this rank sees in `epoch`, in order: (rows_per_rank,) int64."""
        return self._epoch_order(epoch).clone()

    # -- batches -------------------------------------------------------------------------
    def batch_key(self, epoch: int, position: int) -> int:
        """Seed of batch `position` of `epoch` on this rank (random crops: data/crops.py)."""
        return epoch_seed(self.seed, epoch * 1_000_003 + position * 97 + self.rank)

    def _fetch(self, idx: torch.Tensor, key: int = 0) -> Batch:
        x = self.packed.gather(idx, key)  # (B, 3, R, R) uint8, CPU
        y = self.packed.labels.index_select(0, idx)  # (B,) int64
        if self.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        x = x.to(self.device, non_blocking=self.pin_memory)  # transfer uint8 ...
        y = y.to(self.device, non_blocking=self.pin_memory)
        x = to_float(x)  # ... then convert on the device: (B, 3, R, R) float in [-1, 1]
        if self.transform is not None:
            x = self.transform(x)
        return x, y

    def _next_rows(self) -> torch.Tensor:
        order = self._epoch_order(self._epoch)
        start = self._position * self.batch_size
        idx = order[start:start + self.batch_size]
        self.last_key = self.batch_key(self._epoch, self._position)
        # Advance before returning, so state_dict() taken after a batch names the next one.
        self._position += 1
        if self._position >= self.batches_per_epoch:
            self._epoch, self._position = self._epoch + 1, 0
        return idx

    def _next(self) -> Batch:
        rows = self._next_rows()
        return self._fetch(rows, self.last_key)

    def __len__(self) -> int:
        """Batches per epoch on this rank (identical on every rank)."""
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        """The remaining batches of the current epoch (all of it unless resumed mid-epoch)."""
        epoch = self._epoch
        while self._epoch == epoch:
            yield self._next()

    def forever(self) -> Iterator[Batch]:
        """An endless stream of batches crossing epoch boundaries."""
        while True:
            yield self._next()

    def next_batch(self) -> Batch:
        """One batch (the same one `forever()` would give next)."""
        return self._next()

    def next_batch_with_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, x, y): the next batch and the dataset rows it holds ((B,) int64, CPU)."""
        rows = self._next_rows()
        return (rows, *self._fetch(rows, self.last_key))

    # -- exact resume --------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def position(self) -> int:
        return self._position

    def state_dict(self) -> dict[str, int]:
        """{"epoch", "position"}: the next batch is batch `position` of epoch `epoch`."""
        return {"epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"bad loader state {state!r}: {e}") from None
        if epoch < 0 or not 0 <= position < self.batches_per_epoch:
            raise ConfigError(f"loader state {state!r} out of range "
                              f"({self.batches_per_epoch} batches per epoch)")
        self._epoch, self._position = epoch, position
