"""AutoAttack through pyautoattack's own API (never ``robustbench.eval.benchmark``).

Versions: ``standard`` (apgd-ce, apgd-t, fab-t, square), ``fast`` (apgd-ce + apgd-t with the
standard settings), ``custom`` (``--aa-attacks``, standard settings). The data are attacked in
chunks of ``batch_size`` examples, each chunk one ``run_standard_evaluation`` call, so per-chunk
results can be saved and an interrupted run resumes; with n <= batch_size the flags are exactly
those of a single direct pyautoattack call. AutoAttack re-seeds the global RNG: it runs inside
``torch.random.fork_rng`` so the caller's RNG state is untouched.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import torch
from pyautoattack import AutoAttack

from ..errors import UserError
from .chunks import run_chunked
from .metric import METRICS, EvalContext, Metric, MetricOutput
from .values import MetricValue

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
VERSIONS = ("standard", "fast", "custom", "plus", "rand")
FAST_ATTACKS = ("apgd-ce", "apgd-t")


def make_autoattack(model: torch.nn.Module, *, norm: str, eps: float, version: str, attacks: tuple[str, ...],
                    seed: int, device: str) -> AutoAttack:
    """A configured ``pyautoattack.AutoAttack`` (``fast`` and ``custom`` use the standard settings)."""
    if version in ("fast", "custom"):
        chosen = list(FAST_ATTACKS if version == "fast" else attacks)
        adversary = AutoAttack(model, norm=norm, eps=eps, version="custom", attacks=chosen, seed=seed, device=device)
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_target_classes = 9
        adversary.apgd_targeted.n_restarts = 1
        adversary.fab.n_restarts = 1
        adversary.fab.n_target_classes = 9
        adversary.square.n_queries = 5000
        return adversary
    return AutoAttack(model, norm=norm, eps=eps, version=version, seed=seed, device=device)


def autoattack_flags(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                     version: str, attacks: tuple[str, ...], seed: int, device: str, batch_size: int) -> np.ndarray:
    """Per-example robustness (bool (N,)): correct on the clean input and on every attack."""
    adversary = make_autoattack(model, norm=norm, eps=eps, version=version, attacks=attacks, seed=seed, device=device)
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    return (y_adv.cpu() == y.cpu()).numpy()


def _cuda_devices(device: str) -> list[int]:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return [torch.device(device).index or 0]
    return []


@METRICS.register("autoattack")
class AutoAttackMetric(Metric):
    """Robust accuracy under AutoAttack at the pointwise eps of the threat model."""

    name = "autoattack"
    shardable = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("autoattack metric")
        group.add_argument("--aa-version", choices=VERSIONS, default=None,
                           help="standard (default), fast = apgd-ce + apgd-t, or custom with --aa-attacks")
        group.add_argument("--aa-attacks", default=None,
                           help=f"comma-separated attacks for --aa-version custom, from {', '.join(ATTACKS)}")

    @classmethod
    def options_from(cls, values: dict[str, Any]) -> dict[str, Any]:
        version = values.get("aa_version") or ("custom" if values.get("aa_attacks") else "standard")
        if version not in VERSIONS:  # a config file, or finetune --aa-version, bypasses argparse's choices
            raise UserError(f"unknown AutoAttack version {version!r}; choose one of {', '.join(VERSIONS)}")
        raw = values.get("aa_attacks") or ""
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")  # a config file may give a list
        attacks = tuple(str(a).strip() for a in items if str(a).strip())
        if version == "custom" and not attacks:
            raise UserError("--aa-version custom needs --aa-attacks, e.g. apgd-ce,apgd-t")
        if attacks and version != "custom":
            raise UserError("--aa-attacks goes with --aa-version custom")
        bad = [a for a in attacks if a not in ATTACKS]
        if bad:
            raise UserError(f"unknown AutoAttack attack(s) {', '.join(bad)}; choose from {', '.join(ATTACKS)}")
        return {"aa_version": version, "aa_attacks": list(attacks or (FAST_ATTACKS if version == "fast" else ()))}

    def compute(self, ctx: EvalContext) -> MetricOutput:
        version, attacks = self.options["aa_version"], tuple(self.options["aa_attacks"])
        norm = ctx.threat_model.value
        if norm not in ("Linf", "L2"):
            raise UserError(f"AutoAttack needs a Linf or L2 threat model, not {norm}")
        x, y = ctx.data.x, ctx.data.y

        def chunk(start: int, stop: int) -> np.ndarray:
            return autoattack_flags(ctx.model, x[start:stop], y[start:stop], norm=norm, eps=ctx.eps,
                                    version=version, attacks=attacks, seed=ctx.seed, device=ctx.device,
                                    batch_size=ctx.batch_size)

        state = ctx.state_dir / "autoattack.npz" if ctx.state_dir else None
        flags = ctx.gather(run_chunked(len(y), ctx.batch_size, chunk, state, "AutoAttack", ctx.progress))
        return MetricOutput(values={"autoattack_acc": MetricValue.accuracy(flags)},
                            labels={"aa_version": version if version != "custom" else "custom:" + "+".join(attacks)},
                            per_example={"autoattack": flags})


logging.getLogger("auto-attack").setLevel(logging.WARNING)
