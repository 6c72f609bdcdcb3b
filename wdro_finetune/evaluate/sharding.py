"""Sharded evaluation under ``torchrun``: the ranks split the examples at batch boundaries.

Shards are whole batches, so every batch (and every AutoAttack chunk, seeded per chunk) sees the same
examples as in one process; dataset-wide statistics (W-PGD) are all-reduced inside the attacks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch.distributed as dist

from ..errors import UserError
from ..distributed import DistInfo
from .metric import EvalContext


def shard_rows(n: int, batch_size: int, rank: int, world: int) -> slice:
    """Rows of rank ``rank``: a contiguous run of whole batches (the last batch may be short)."""
    n_batches = -(-n // batch_size)
    if n_batches < world:
        raise UserError(f"{n} examples in batches of {batch_size} give {n_batches} batches for {world} processes; "
                        "use a smaller --batch-size or fewer processes")
    first, stop = rank * n_batches // world, (rank + 1) * n_batches // world
    return slice(first * batch_size, min(n, stop * batch_size))


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Concatenate an array over all ranks in rank order (first axis)."""
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, np.asarray(local))
    return np.concatenate(parts)


def shard_context(ctx: EvalContext, info: DistInfo) -> EvalContext:
    """This rank's view of ``ctx`` for shardable metrics (the same context in one process)."""
    if info.world <= 1:
        return ctx
    rows = shard_rows(len(ctx.data), ctx.batch_size, info.rank, info.world)
    data = dataclasses.replace(ctx.data, x=ctx.data.x[rows], y=ctx.data.y[rows])
    state_dir = ctx.state_dir / f"rank{info.rank}-of-{info.world}" if ctx.state_dir is not None else None
    return dataclasses.replace(ctx, data=data, state_dir=state_dir, per_example={}, gather=gather_rows)
