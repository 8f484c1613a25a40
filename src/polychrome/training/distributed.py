"""Multi-process data-parallel training under `torchrun` (gloo on CPU, NCCL on GPU).

The same CLI runs alone or under torchrun: RANK / WORLD_SIZE / LOCAL_RANK in the
environment switch it on. Each rank trains on its own data shard and noise seed;
gradients are averaged across ranks after every backward (the semantics of
DistributedDataParallel). We reduce gradients by hand rather than wrapping the
networks in DDP because GAN steps do several forwards per backward, toggle
requires_grad on D during the G step and take double-backward penalties
(GP, R1), which the DDP reducer does not support. Only rank 0 writes files.

Collectives never pickle: strings and RNG states travel as uint8 tensors.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

from ..errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None = single process

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
    """(rank, world_size, local_rank) from torchrun's environment, (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None
    return rank, world, local


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """'auto' -> the local GPU if there is one, else CPU; 'cuda' -> cuda:<local_rank>."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r} requested but CUDA is not available")
        return torch.device(pref if ":" in pref else f"cuda:{local_rank}")
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
    log.info("rank %d/%d on %s (%s)", rank, world, device, backend)
    return DistEnv(rank, world, local, device, backend)


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
