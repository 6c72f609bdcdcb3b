"""Precomputed sensitivity examples (``--inner-examples precomputed-fgsm``; Ovalle et al.'s Table 1): the FGSM
example of every training image in use against the STARTING model (before any update), or against the weights of
``--precomputed-source`` (e.g. a cleanly trained model, as the paper's static examples), made once at the start
of a run, batched, with a progress bar.

They are kept in the run folder as ``sensitivity_examples.safetensors`` (tensor ``x`` (N_train, C, H, W) float32)
with what they were made from as metadata: the attack, eps, norm, and the sha256 of the starting weights and of
the training images and labels. A resumed run reads the very tensors the uninterrupted run used; a file made
from anything else is refused on ``--resume`` and replaced otherwise. Under torchrun rank 0 makes (or reads) the
file while the others wait at a barrier, then they read it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..attacks.pointwise import FGSM
from ..config.finetune import FinetuneConfig
from ..data.datasets import DataSplit
from ..distributed import DistInfo, barrier
from ..errors import UserError
from ..models.checkpoint import load_weights_into, save_safetensors
from ..utils.progress import progress_bar

log = logging.getLogger(__name__)

FILE = "sensitivity_examples.safetensors"
ATTACK = "fgsm"  # FGSM without random start, step eps: the evaluation's ``fgsm`` attack
BATCH = 500  # images per attack call


def stored_examples(cfg: FinetuneConfig, model: nn.Module, train: DataSplit, out: Path, info: DistInfo,
                    progress: bool = False) -> torch.Tensor | None:
    """(N_train, C, H, W) float32 on the CPU: row i is the FGSM example (``cfg.precomputed_eps``) of training image i
    against ``model`` as it is now (the starting weights) or against the weights of ``--precomputed-source``; None
    unless ``--inner-examples precomputed-fgsm``."""
    if cfg.inner_examples != "precomputed-fgsm":
        return None
    path = Path(out) / FILE
    model = attacked_model(model, cfg.precomputed_source, cfg.trust_checkpoint)
    identity = made_from(model, train, cfg.precomputed_eps, cfg.threat_model.value)
    table = None
    if info.is_main:
        table = read_examples(path, identity, must_match=cfg.resume)
        if table is None:
            against = cfg.precomputed_source or "the starting model"
            print(f"precomputed-fgsm: making the FGSM examples (eps {cfg.precomputed_eps:g}) of the {len(train)} "
                  f"training images against {against} once; stored in {path}", file=sys.stderr, flush=True)
            table = make_examples(model, train.x, train.y, cfg.precomputed_eps, cfg.threat_model.value, cfg.device,
                                  progress)
            write_examples(path, table, identity)
    barrier(info)
    if table is None:
        table = read_examples(path, identity, must_match=True)
    if table is None:
        raise RuntimeError(f"rank {info.rank}: rank 0 wrote no sensitivity examples to {path}")
    return table


def attacked_model(model: nn.Module, source: str | None, trust: bool = False) -> nn.Module:
    """The model whose FGSM examples are stored: ``model`` itself, or a copy of it holding the weights of the
    file ``source`` (same architecture)."""
    if source is None:
        return model
    return load_weights_into(copy.deepcopy(model), source, trust=trust).eval()


def make_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, device: str = "cpu",
                  progress: bool = False, batch_size: int = BATCH) -> torch.Tensor:
    """FGSM examples of x (N, C, H, W) in [0, 1] with labels y (N,) at radius ``eps`` (pixel units of [0, 1]),
    in batches of ``batch_size`` on ``device``; returned on the CPU, float32."""
    attack = FGSM(eps=float(eps), norm=norm)
    rows = []
    with progress_bar(len(y), "FGSM examples", progress, unit="img") as bar:
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            rows.append(attack(model, xb, yb).float().cpu())
            bar.update(len(yb))
    return torch.cat(rows) if rows else x[:0].float().clone()


def made_from(model: nn.Module, train: DataSplit, eps: float, norm: str) -> dict[str, str]:
    """What identifies a table: the attack, eps, norm, sha256 of the weights and of the training images."""
    return {"attack": ATTACK, "eps": repr(float(eps)), "norm": norm, "weights_sha256": weights_sha256(model),
            "data_sha256": _tensors_sha256([train.x, train.y]), "n": str(len(train))}


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's state (names, dtypes, shapes and bytes of every parameter and buffer)."""
    state = sorted(model.state_dict().items())
    return _tensors_sha256([t for _, t in state], [name for name, _ in state])


def _tensors_sha256(tensors: list[torch.Tensor], names: list[str] | None = None) -> str:
    digest = hashlib.sha256()
    for i, t in enumerate(tensors):
        t = t.detach().cpu().contiguous()
        digest.update(f"{names[i] if names else i}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_examples(path: Path, table: torch.Tensor, identity: dict[str, str]) -> Path:
    """Write the table and its identity atomically."""
    return save_safetensors({"x": table}, path, identity)


def read_examples(path: Path, identity: dict[str, str], must_match: bool) -> torch.Tensor | None:
    """The stored table when ``path`` holds one made from ``identity``; None when the file is missing or (unless
    ``must_match``: UserError) made from something else."""
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as fh:
        saved = fh.metadata() or {}
        table = fh.get_tensor("x") if saved == identity else None
    if table is None:
        if must_match:
            differ = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
            raise UserError(f"{path} holds sensitivity examples made from other inputs ({', '.join(differ)}); "
                            f"--resume would not continue the same run (delete the file to start over)")
        log.info("replacing %s: made from other inputs", path)
    return table
