"""Data parallelism under ``torchrun`` (gloo on CPU, nccl on CUDA; only rank 0 writes files) and the
dataset-wide sums the attacks and metrics take across ranks (no-ops in a single process). The ground floor:
imports nothing of the package."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process).

    On CUDA each process makes its LOCAL_RANK GPU the current device, so ``"cuda"`` means that GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap_model(model: nn.Module, info: DistInfo, device: str) -> nn.Module:
    """DistributedDataParallel when world > 1 (gradients averaged over ranks), else the model."""
    if info.world <= 1:
        return model
    ids = [info.local_rank] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def mean_over_ranks(value: float, info: DistInfo) -> float:
    """Average a Python float over ranks (for logging)."""
    if info.world <= 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world

def is_distributed() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over all ranks (in place, also returned); unchanged without a process group.

    Use a float64 tensor on a device the backend supports (CPU for gloo, CUDA for NCCL).
    """
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def global_sums(*values: float, device: torch.device | str = "cpu") -> list[float]:
    """Sum each Python number over all ranks with one collective; returns plain floats."""
    packed = torch.tensor(values, dtype=torch.float64, device=device)
    return all_reduce_sum(packed).tolist()


def global_max(value: float, device: torch.device | str = "cpu") -> float:
    """Maximum of a Python number over all ranks."""
    packed = torch.tensor([value], dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return packed.item()


def local_sums(*values: float, device: torch.device | str = "cpu") -> list[float]:
    """The values themselves (the single-process ``global_sums``: for data every rank already holds)."""
    return [float(v) for v in values]


def all_gather_cat(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate a 1-D tensor over ranks in rank order (ranks may hold different lengths); returns the
    whole tensor and this rank's offset in it. Unchanged (offset 0) without a process group."""
    if not is_distributed():
        return values, 0
    sizes = [torch.zeros(1, dtype=torch.long, device=values.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([values.numel()], dtype=torch.long, device=values.device))
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(counts), dtype=values.dtype, device=values.device)
    padded[:values.numel()] = values
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    whole = torch.cat([g[:c] for g, c in zip(gathered, counts)])
    return whole, sum(counts[:dist.get_rank()])
