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
