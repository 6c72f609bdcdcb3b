"""The ``autoattack`` metric: robust accuracy under AutoAttack (:class:`~wdro_finetune.attacks.autoattack.
AutoAttackEnsemble`, pyautoattack's own API) at the pointwise eps of the threat model.

Versions: ``standard`` (apgd-ce, apgd-t, fab-t, square), ``fast`` (apgd-ce + apgd-t with the
standard settings), ``custom`` (``--aa-attacks``, standard settings). The data are attacked in
chunks of ``batch_size`` examples, each chunk one ``run_standard_evaluation`` call, so per-chunk
results can be saved and an interrupted run resumes; with n <= batch_size the flags are exactly
those of a single direct pyautoattack call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..attacks.autoattack import AA_ATTACKS, FAST_ATTACKS, VERSIONS, AutoAttackEnsemble
from ..config.options import option
from ..errors import UserError
from .chunks import run_chunked
from .metric import METRICS, EvalContext, Metric, MetricOutput, option_values
from .values import MetricValue


def autoattack_flags(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                     version: str, attacks: tuple[str, ...], seed: int, device: str, batch_size: int) -> np.ndarray:
    """Per-example robustness (bool (N,)): correct on the clean input and on every attack."""
    attack = AutoAttackEnsemble(norm=norm, eps=eps, version=version, attacks=tuple(attacks), seed=seed,
                                device=device, batch_size=batch_size)
    return (attack.labels(model, x, y).cpu() == y.cpu()).numpy()


@dataclass(frozen=True)
class AutoAttackMetricOptions:
    aa_version: str | None = option(None, "standard (default), fast = apgd-ce + apgd-t, or custom with --aa-attacks",
                                    choices=VERSIONS)  # None: custom with --aa-attacks, else standard
    aa_attacks: tuple[str, ...] | None = option(
        None, f"comma-separated attacks for --aa-version custom, from {', '.join(AA_ATTACKS)}")

    @classmethod
    def parse(cls, values: dict[str, Any]) -> "AutoAttackMetricOptions":
        given = option_values(cls, values)
        raw = given["aa_attacks"] or ""
        version = given["aa_version"] or ("custom" if raw else "standard")
        if version not in VERSIONS:  # a config file, or finetune --aa-version, bypasses argparse's choices
            raise UserError(f"unknown AutoAttack version {version!r}; choose one of {', '.join(VERSIONS)}")
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")  # a config file may give a list
        attacks = tuple(str(a).strip() for a in items if str(a).strip())
        if version == "custom" and not attacks:
            raise UserError("--aa-version custom needs --aa-attacks, e.g. apgd-ce,apgd-t")
        if attacks and version != "custom":
            raise UserError("--aa-attacks goes with --aa-version custom")
        bad = [a for a in attacks if a not in AA_ATTACKS]
        if bad:
            raise UserError(f"unknown AutoAttack attack(s) {', '.join(bad)}; choose from {', '.join(AA_ATTACKS)}")
        return cls(version, attacks or (FAST_ATTACKS if version == "fast" else ()))

    def record(self) -> dict[str, Any]:
        return {"aa_version": self.aa_version, "aa_attacks": list(self.aa_attacks)}


@METRICS.register("autoattack")
class AutoAttackMetric(Metric):
    """Robust accuracy under AutoAttack at the pointwise eps of the threat model."""

    name = "autoattack"
    Options = AutoAttackMetricOptions
    shardable = True

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
