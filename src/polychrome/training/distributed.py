"""Multi-process data-parallel training under `torchrun` (gloo on CPU, NCCL on GPU).

The same CLI runs alone or under torchrun: RANK / WORLD_SIZE / LOCAL_RANK in the
environment switch it on. Each rank trains on its own data shard and noise seed;
gradients are averaged across ranks after every backward (the semantics of
DistributedDataParallel). We reduce gradients by hand rather than wrapping the
networks in DDP because GAN steps do several forwards per backward, toggle
requires_grad on D during the G step and take double-backward penalties
(GP, R1), which the DDP reducer does not support. Only rank 0 writes files.

Several machines work the same way (`torchrun --nnodes N` with a c10d rendezvous):
RANK is the global rank (data shard, noise seed, "rank 0 writes"), LOCAL_RANK only
picks this machine's GPU. Because ranks average gradients instead of sharing weights,
`check_ranks_agree` verifies at every checkpoint and at the end that every rank still
holds bit-identical parameters, and stops the run with a clear error when they do not.

Collectives never pickle: strings and RNG states travel as uint8 tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

from ..errors import ConfigError, TrainingError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None = single process
    node: int = 0  # this machine's index among the nodes (torchrun's GROUP_RANK)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where tensors must live for collectives (NCCL needs CUDA tensors)."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


def env_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment, (0, 1, 0) without it.

    RANK is global (0 .. WORLD_SIZE-1 over every machine); LOCAL_RANK counts this
    machine's processes only. A launcher that sets no LOCAL_RANK gets RANK modulo
    LOCAL_WORLD_SIZE when that is given, else RANK (one machine).
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        if "LOCAL_RANK" in os.environ:
            local = int(os.environ["LOCAL_RANK"])
        elif "LOCAL_WORLD_SIZE" in os.environ:
            local = rank % max(1, int(os.environ["LOCAL_WORLD_SIZE"]))
        else:
            local = rank
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got RANK={rank}, "
                          f"WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


def env_node() -> int:
    """This machine's node index under torchrun (GROUP_RANK), 0 without it."""
    try:
        return int(os.environ.get("GROUP_RANK", "0"))
    except ValueError:
        return 0


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """'auto' -> the local GPU if there is one, else CPU; 'cuda' -> cuda:<local_rank>."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r} requested but CUDA is not available")
        if ":" in pref:
            return torch.device(pref)
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} has no GPU: this machine has "
                              f"{torch.cuda.device_count()}; start at most that many processes "
                              "per node (--nproc_per_node)")
        return torch.device(f"cuda:{local_rank}")
    if pref == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device 'mps' requested but it is not available")
        return torch.device("mps")
    if pref != "cpu":
        raise ConfigError(f"unknown device {pref!r}; use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto") -> DistEnv:
    """Join the torchrun process group if WORLD_SIZE > 1; pick this rank's device."""
    rank, world, local = env_ranks()
    device = pick_device(device_pref, local)
    if world <= 1:
        return DistEnv(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    node = env_node()
    log.info("rank %d/%d on %s (%s; node %d, local rank %d)", rank, world, device, backend,
             node, local)
    return DistEnv(rank, world, local, device, backend, node)


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def sync_grads(params: Iterable[torch.nn.Parameter], env: DistEnv) -> None:
    """Average .grad across ranks in one flat all-reduce (params without grad are skipped).

    Every rank runs the same code path, so the set of params with a grad agrees.
    """
    if not env.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).to(env.comm_device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_module(module: torch.nn.Module, env: DistEnv, *, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (and buffers) to every rank."""
    if not env.enabled:
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    for t in tensors:
        buf = t.detach().to(env.comm_device)
        dist.broadcast(buf, src=0)
        with torch.no_grad():
            t.copy_(buf)


def any_true(flag: bool, env: DistEnv) -> bool:
    """True on every rank if `flag` is true on any rank."""
    if not env.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=env.comm_device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_flag(flag: bool, env: DistEnv) -> bool:
    """Rank 0's `flag` on every rank."""
    if not env.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=env.comm_device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_str(text: str, env: DistEnv) -> str:
    """Rank 0's string on every rank (UTF-8 bytes in a uint8 tensor)."""
    if not env.enabled:
        return text
    data = torch.tensor(list(text.encode("utf-8")) if env.is_main else [], dtype=torch.uint8)
    n = torch.tensor([data.numel()], dtype=torch.int64, device=env.comm_device)
    dist.broadcast(n, src=0)
    buf = torch.zeros(int(n.item()), dtype=torch.uint8, device=env.comm_device)
    if env.is_main:
        buf.copy_(data)
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().tolist()).decode("utf-8")


def all_gather_cat(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate an equally shaped tensor from every rank along dim 0 (rank order)."""
    if not env.enabled:
        return t
    src = t.detach().to(env.comm_device).contiguous()
    parts = [torch.empty_like(src) for _ in range(env.world_size)]
    dist.all_gather(parts, src)
    return torch.cat(parts).to(t.device)


def gather_states(states: dict[str, torch.Tensor], env: DistEnv) -> list[dict[str, torch.Tensor]]:
    """Every rank's copy of some fixed-size state tensors (e.g. RNG states), rank order."""
    if not env.enabled:
        return [states]
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(env.world_size)]
    for key in sorted(states):
        t = states[key]
        stacked = all_gather_cat(t.reshape(1, -1), env)  # (world, numel)
        for r in range(env.world_size):
            out[r][key] = stacked[r].reshape(t.shape).to(t.dtype).cpu()
    return out


def mean_across_ranks(values: dict[str, torch.Tensor], env: DistEnv) -> dict[str, torch.Tensor]:
    """Average scalar tensors over ranks (same keys on every rank), for logging."""
    if not env.enabled or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(env.comm_device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    return {k: flat[i].cpu() for i, k in enumerate(keys)}


def param_checksum(module: torch.nn.Module) -> float:
    """A position-weighted float64 sum of every parameter: equal on ranks that agree."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(module.parameters()):
        total += p.detach().double().sum().cpu() * (i + 1)
    return float(total)


def gather_floats(value: float, env: DistEnv) -> list[float]:
    """[value of rank 0, value of rank 1, ...]."""
    if not env.enabled:
        return [value]
    t = torch.tensor([value], dtype=torch.float64, device=env.comm_device)
    return [float(v) for v in all_gather_cat(t, env).cpu()]


def check_same_data(counts: list[int], env: DistEnv) -> None:
    """Every rank must see the same data (sizes, styles): else the shards overlap or miss.

    On several machines each one reads its own copy of the dataset; a node with another
    version (or a stale copy) would silently train on different pictures.
    """
    if not env.enabled:
        return
    t = torch.tensor(counts, dtype=torch.int64, device=env.comm_device).reshape(1, -1)
    rows = all_gather_cat(t, env).cpu().tolist()
    bad = [r for r, row in enumerate(rows) if row != rows[0]]
    if bad:
        raise ConfigError(f"ranks see different training data (rank 0: {rows[0]}, rank "
                          f"{bad[0]}: {rows[bad[0]]} as [images, styles, resolution]): every "
                          "node needs the same dataset version")


# -- do the ranks still hold the same weights? -------------------------------------------
_FP_CHUNK = 1 << 22  # bytes per step of the fingerprint (bounds its scratch memory)
_FP_MOD = 65521  # position weights cycle below 2**16: byte * weight < 2**24, sums stay exact


def tensor_fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Two int64 numbers that change whenever any bit of `t` changes.

    Over the tensor's bytes b_i: (sum b_i, sum b_i * w_i) with position weights
    w_i = i mod 65521 + 1. Integer sums are exact and do not depend on the order of
    summation, so ranks on different machines (or GPUs) give equal numbers exactly
    when their tensors are equal byte for byte; any single changed byte always changes
    the weighted sum.
    """
    data = t.detach().reshape(-1).contiguous().view(torch.uint8)
    total = torch.zeros(2, dtype=torch.int64, device=data.device)
    for start in range(0, data.numel(), _FP_CHUNK):
        chunk = data[start:start + _FP_CHUNK].to(torch.int64)
        weights = (torch.arange(start, start + chunk.numel(), dtype=torch.int64,
                                device=data.device) % _FP_MOD) + 1
        total[0] += chunk.sum()
        total[1] += (chunk * weights).sum()
    return total


def _digest(row: list[int]) -> str:
    return hashlib.sha256(str(row).encode()).hexdigest()[:16]


def check_ranks_agree(named: Iterable[tuple[str, torch.Tensor]], env: DistEnv, *,
                      step: int) -> dict:
    """Compare every rank's tensors (parameters) with rank 0's; raise if any differ.

    Collective: every rank calls it with the same names in the same order. Each rank
    fingerprints its tensors (`tensor_fingerprint`), the fingerprints are gathered
    (a few bytes per tensor), and each is compared with rank 0's. On a mismatch the
    first differing tensor is broadcast from rank 0 to measure how far the ranks
    drifted, and every rank raises TrainingError(code="ranks_diverged").

    Returns the record of the check (the same on every rank): step, world_size, nodes,
    tensors, agree, and per rank its node, local rank and fingerprint digest.
    """
    items = list(named)
    names = [n for n, _ in items]
    if not env.enabled:
        return {"step": step, "world_size": 1, "nodes": 1, "tensors": len(items),
                "agree": True, "ranks": []}
    header = torch.tensor([[len(items), env.local_rank, env.node]], dtype=torch.int64,
                          device=env.comm_device)
    heads = all_gather_cat(header, env).cpu().tolist()
    if any(h[0] != heads[0][0] for h in heads):
        raise TrainingError(f"ranks disagree at step {step}: they hold "
                            f"{[h[0] for h in heads]} tensors", code="ranks_diverged")
    local = torch.stack([tensor_fingerprint(t) for _, t in items]) if items else         torch.zeros((0, 2), dtype=torch.int64)
    mine = local.reshape(1, -1).to(env.comm_device)
    rows = all_gather_cat(mine, env).cpu().reshape(env.world_size, len(items), 2)
    differ = (rows != rows[0:1]).any(dim=2)  # (world, tensors)
    record = {
        "step": step, "world_size": env.world_size,
        "nodes": len({h[2] for h in heads}), "tensors": len(items),
        "agree": not bool(differ.any()),
        "ranks": [{"rank": r, "node": heads[r][2], "local_rank": heads[r][1],
                   "fingerprint": _digest(rows[r].reshape(-1).tolist())}
                  for r in range(env.world_size)],
    }
    if record["agree"]:
        return record
    bad_ranks = [r for r in range(env.world_size) if bool(differ[r].any())]
    bad_tensors = [i for i in range(len(items)) if bool(differ[:, i].any())]
    first = bad_tensors[0]
    ref = items[first][1].detach().to(env.comm_device).clone()
    dist.broadcast(ref, src=0)
    gap = (items[first][1].detach().to(env.comm_device).double() - ref.double()).abs().max()
    gaps = gather_floats(float(gap), env)
    record["differing"] = [names[i] for i in bad_tensors]
    record["max_abs_diff"] = {names[first]: gaps}
    raise RanksDiverged(
        f"ranks hold different weights at step {step}: {len(bad_tensors)} of {len(items)} "
        f"tensors differ from rank 0 on rank(s) {bad_ranks} (first: {names[first]}, max "
        f"|difference| {max(gaps):.3g}); gradients are averaged, so the ranks should agree "
        "bit for bit: check that every node runs the same code, torch version and data",
        record)


class RanksDiverged(TrainingError):
    """Raised on every rank when `check_ranks_agree` finds different weights."""

    code = "ranks_diverged"

    def __init__(self, message: str, record: dict):
        super().__init__(message)
        self.record = record


def amp_dtype_for(mode: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA: 'auto' -> bf16 where supported."""
    if mode == "off":
        return None
    if device.type != "cuda":
        if mode in ("bf16", "fp16"):
            log.warning("amp=%s ignored: mixed precision is used on CUDA only", mode)
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
