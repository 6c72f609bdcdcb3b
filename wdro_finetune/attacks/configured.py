"""Attack objects configured by a frozen ``Options`` dataclass: the base class of every attack in
:data:`~.registry.ATTACKS` (pointwise FGSM / PGD / N-FGSM, W-PGD, minimal-norm attacks, AutoAttack).

Every such attack follows the one contract of :mod:`.base`: ``x_adv = attack(model, x, y, *, loss=None,
generator=None)``, x (N, C, H, W) in [0, 1], y (N,) int64. Its settings are the fields of its ``Options``
(declared with :func:`~wdro_finetune.config.options.option`: default, help and choices written once):
``FGSM(eps=0.3)``, ``FGSM(options)`` or ``FGSM.from_values({"eps": "8/255"})`` (the one strict
conversion of values from any source). Budgets are in pixel units of [0, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..config.options import convert_fields
from ..errors import UserError
from .base import Attack
from .losses import AttackLoss


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
