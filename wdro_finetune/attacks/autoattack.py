"""AutoAttack (Croce & Hein, ICML 2020) as an :class:`~.base.Attack`: a thin wrapper of PyPI's ``pyautoattack``
(its own API, never ``robustbench.eval.benchmark``; see :mod:`wdro_finetune.compat` for why the two coexist).

Versions: ``standard`` (apgd-ce, apgd-t, fab-t, square), ``fast`` (apgd-ce + apgd-t with the standard
settings), ``custom`` (``attacks``, standard settings), ``plus`` and ``rand`` as in pyautoattack. AutoAttack
re-seeds the global RNG: it runs inside ``torch.random.fork_rng``, so the caller's RNG state is untouched.
Budgets: ``eps`` in pixel units of [0, 1] under ``norm``; x (N, C, H, W) in [0, 1] (any device: batches of
``batch_size`` go to ``device``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..config.options import option
from .configured import ConfiguredAttack, call_with_output
from .pointwise import NORMS

AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
VERSIONS = ("standard", "fast", "custom", "plus", "rand")
FAST_ATTACKS = ("apgd-ce", "apgd-t")


@dataclass(frozen=True)
class AutoAttackOptions:
    eps: float = option(8 / 255, "radius of the ball in pixel units of [0, 1]")
    norm: str = option("Linf", "norm of the ball", choices=NORMS)
    version: str = option("standard", "AutoAttack version", choices=VERSIONS)
    attacks: tuple[str, ...] = option((), f"attacks of version custom, from {', '.join(AA_ATTACKS)}")
    seed: int = option(0, "AutoAttack's seed")
    device: str = option("cpu", "device the batches go to")
    batch_size: int = option(250, "examples per pyautoattack batch")


class AutoAttackEnsemble(ConfiguredAttack):
    """AutoAttack's ensemble: per example the first attack that fools the model (``loss`` is not used: each
    attack has its own). Calling it returns x_adv; :meth:`labels` returns AutoAttack's predictions on x_adv."""

    Options = AutoAttackOptions

    def labels(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y_adv (N,) int64: AutoAttack's own predicted class of each adversarial example."""
        def attack(model, x, y, loss, generator):
            x_adv, y_adv = self._run(model, x, y)
            return x_adv, y_adv

        return call_with_output(attack, model, x, y, self.loss)

    def perturb(self, model, x, y, loss, generator):
        return self._run(model, x, y)[0]

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adversary = self.adversary(model)
        with torch.random.fork_rng(devices=_cuda_devices(self.options.device)):
            return adversary.run_standard_evaluation(x, y, batch_size=self.options.batch_size)

    def adversary(self, model: nn.Module):
        """A configured ``pyautoattack.AutoAttack`` (``fast`` and ``custom`` use the standard settings)."""
        from pyautoattack import AutoAttack

        o = self.options
        if o.version not in ("fast", "custom"):
            return AutoAttack(model, norm=o.norm, eps=o.eps, version=o.version, seed=o.seed, device=o.device)
        chosen = list(FAST_ATTACKS if o.version == "fast" else o.attacks)
        adversary = AutoAttack(model, norm=o.norm, eps=o.eps, version="custom", attacks=chosen, seed=o.seed,
                               device=o.device)
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_target_classes = 9
        adversary.apgd_targeted.n_restarts = 1
        adversary.fab.n_restarts = 1
        adversary.fab.n_target_classes = 9
        adversary.square.n_queries = 5000
        return adversary


def _cuda_devices(device: str) -> list[int]:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return [torch.device(device).index or 0]
    return []


logging.getLogger("auto-attack").setLevel(logging.WARNING)
