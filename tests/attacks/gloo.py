"""Run a per-shard function in 2 gloo processes (torch.multiprocessing, file rendezvous) and collect the outputs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

Shard = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict]


def run_in_two_processes(shard: Shard, model: nn.Module, x: torch.Tensor, y: torch.Tensor, split: int) -> list[dict]:
    """``shard(model, x[rows], y[rows])`` with rows [0, split) on rank 0 and [split, N) on rank 1; both results.
    ``shard`` must be a module-level function (it is pickled into the spawned processes)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(str(Path(tmp) / "init"), tmp, shard, model, x, y, (0, split, x.shape[0])), nprocs=2)
        return [torch.load(Path(tmp) / f"rank{rank}.pt") for rank in range(2)]


def _worker(rank: int, init_file: str, out_dir: str, shard: Shard, model: nn.Module, x: torch.Tensor,
            y: torch.Tensor, bounds: tuple[int, int, int]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        rows = slice(bounds[rank], bounds[rank + 1])
        torch.save(shard(model, x[rows], y[rows]), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
