"""Attack objects configured by a frozen ``Options`` dataclass, and the pointwise FGSM / PGD of the evaluation side
(the ``fgsm`` metric, the embedding plots, the engine's hold-out check).

Every attack here follows the one contract of :mod:`.base`: ``x_adv = attack(model, x, y, *, loss=None,
generator=None)``, x (N, C, H, W) in [0, 1], y (N,) int64. Its settings are the fields of its ``Options``
(declared with :func:`~wdro_finetune.config.options.option`: default, help and choices written once):
``FGSMAttack(eps=0.3)``, ``FGSMAttack(options)`` or ``FGSMAttack.from_values({"eps": "8/255"})`` (the one strict
conversion of values from any source). Budgets are in pixel units of [0, 1].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..config.options import convert_fields, option
from ..errors import UserError
from .base import Attack
from .losses import AttackLoss
from .pointwise import NORMS, default_step, fgsm, pgd


class ConfiguredAttack(Attack):
    """An :class:`Attack` whose settings are one frozen ``Options`` dataclass (``self.options``)."""

    Options: ClassVar[type]

    def __init__(self, options: Any = None, **values: Any):
        self.options = self.Options(**values) if options is None else dataclasses.replace(options, **values)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "ConfiguredAttack":
        """The attack from option values of any source (strings, YAML / TOML values); unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"{cls.__name__}: unknown option(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(names))}")
        return cls(cls.Options(**convert_fields(cls.Options, values)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


class _OneCall(Attack):
    """Runs ``run(model, x, y, loss, generator) -> (x_adv, output)`` once through :meth:`Attack.__call__` (eval
    mode, frozen parameters: the one place that does it) and keeps ``output``, for attacks with a richer result."""

    def __init__(self, run: Callable[..., tuple[torch.Tensor, Any]], loss: AttackLoss):
        self.run, self.loss, self.output = run, loss, None

    def perturb(self, model, x, y, loss, generator):
        x_adv, self.output = self.run(model, x, y, loss, generator)
        return x_adv


def call_with_output(run: Callable[..., tuple[torch.Tensor, Any]], model: nn.Module, x: torch.Tensor,
                     y: torch.Tensor, loss: AttackLoss, generator: torch.Generator | None = None) -> Any:
    """``output`` of ``run(model, x, y, loss, generator) -> (x_adv, output)``, run as an attack (:class:`_OneCall`)."""
    call = _OneCall(run, loss)
    call(model, x, y, generator=generator)
    return call.output


@dataclass(frozen=True)
class FGSMOptions:
    eps: float = option(8 / 255, "radius of the ball in pixel units of [0, 1]")
    norm: str = option("Linf", "norm of the ball", choices=NORMS)
    random_start: bool = option(False, "start at a uniform random point of the ball instead of x")
    step_size: float | None = option(None, "step length (default: eps)")


class FGSMAttack(ConfiguredAttack):
    """FGSM (Goodfellow, Shlens & Szegedy, ICLR 2015): one steepest-ascent step of ``step_size`` (l_inf: sign of the
    gradient; l_2: normalised gradient), projected to the eps-ball around x and to [0, 1]."""

    Options = FGSMOptions

    def perturb(self, model, x, y, loss, generator):
        o = self.options
        return fgsm(model, x, y, eps=o.eps, norm=o.norm, loss=loss, random_start=o.random_start,
                    step_size=o.step_size, generator=generator)


@dataclass(frozen=True)
class PGDOptions:
    eps: float = option(8 / 255, "radius of the ball in pixel units of [0, 1]")
    norm: str = option("Linf", "norm of the ball", choices=NORMS)
    steps: int = option(10, "gradient steps")
    step_size: float | None = option(None, "step length (default: 2.5 eps / steps)")
    random_start: bool = option(True, "start at a uniform random point of the ball")


class PGDAttack(ConfiguredAttack):
    """PGD (Madry et al., ICLR 2018): ``steps`` steepest-ascent steps, each projected to the eps-ball and [0, 1];
    returns the last iterate. The random start draws from ``generator`` (default: the global RNG)."""

    Options = PGDOptions

    def perturb(self, model, x, y, loss, generator):
        o = self.options
        step = default_step(o.eps, o.steps) if o.step_size is None else o.step_size
        return pgd(model, x, y, eps=o.eps, norm=o.norm, steps=o.steps, step_size=step, loss=loss,
                   random_start=o.random_start, generator=generator)
