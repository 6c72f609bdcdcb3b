"""The attacks by name: :data:`ATTACKS` maps a name to an attack class whose ``Options`` (a frozen dataclass of
:func:`~wdro_finetune.config.options.option` fields) declare its settings; :func:`make_attack` builds one from
option values of any source (converted by the one strict rule)."""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .autoattack import AutoAttackEnsemble
from .configured import ConfiguredAttack
from .minimal_norm import FABT, FMN, Refine
from .pointwise import FGSM, PGD, NoiseFGSM
from .wasserstein_eval import WPGD

ATTACKS: Registry[type[ConfiguredAttack]] = Registry("attack")
for _name, _cls in (("fgsm", FGSM), ("pgd", PGD), ("n-fgsm", NoiseFGSM), ("w-pgd", WPGD), ("fmn", FMN),
                    ("fab-t", FABT), ("refine", Refine), ("autoattack", AutoAttackEnsemble)):
    ATTACKS.add(_name, _cls)


def make_attack(name: str, **values: Any) -> ConfiguredAttack:
    """``make_attack("pgd", eps="8/255", steps=20)``: the attack called ``name`` with these options (UserError
    for an unknown name, an unknown option or a value of the wrong type)."""
    return ATTACKS.get(name).from_values(values)
