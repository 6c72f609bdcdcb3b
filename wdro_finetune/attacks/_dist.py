"""Dataset-wide sums across ``torch.distributed`` ranks (a no-op in a single process)."""

from __future__ import annotations

import torch
import torch.distributed as dist


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
