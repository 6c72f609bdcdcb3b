"""The pointwise attack objects are one family: registered once in ATTACKS, with the evaluation defaults of
their ``Options`` and the iterates of the functions of :mod:`wdro_finetune.attacks.pointwise`."""

from __future__ import annotations

import pytest
import torch

from wdro_finetune.attacks import ATTACKS, make_attack
from wdro_finetune.attacks.losses import cross_entropy
from wdro_finetune.attacks.pointwise import (FGSM, PGD, NoiseFGSM, PGDOptions, default_step, fgsm,
                                             noise_fgsm_maximize, pgd)
from wdro_finetune.errors import UserError


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


def test_each_pointwise_attack_is_registered_once_by_its_class():
    assert (ATTACKS.get("pgd"), ATTACKS.get("fgsm"), ATTACKS.get("n-fgsm")) == (PGD, FGSM, NoiseFGSM)
    assert PGD().options == PGDOptions(eps=8 / 255, norm="Linf", steps=10, step_size=None, start="uniform")
    assert (FGSM().options.random_start, FGSM().options.step_size, NoiseFGSM().options.noise_scale) == (False, None, 2.0)


def test_defaults_make_the_iterates_of_the_functions(trained_model, mnist_test):
    x, y = mnist_test[0][:32], mnist_test[1][:32]
    got = make_attack("pgd", eps="0.1", steps="3")(trained_model, x, y, generator=_gen())
    want = pgd(trained_model, x, y, eps=0.1, steps=3, step_size=default_step(0.1, 3), random_start=True,
               generator=_gen())
    assert torch.equal(got, want)
    assert torch.equal(make_attack("fgsm", eps=0.1)(trained_model, x, y), fgsm(trained_model, x, y, eps=0.1))
    noisy = make_attack("n-fgsm", eps=0.1)(trained_model, x, y, generator=_gen())
    assert torch.equal(noisy, noise_fgsm_maximize(trained_model, x, lambda z: cross_entropy(z, y), eps=0.1,
                                                  generator=_gen()))


def test_with_random_start_is_wongs_fgsm(trained_model, mnist_test):
    x, y = mnist_test[0][:32], mnist_test[1][:32]
    attack = FGSM.with_random_start(0.1, "L2")
    assert (attack.options.random_start, attack.options.step_size) == (True, pytest.approx(0.125))
    got = attack(trained_model, x, y, generator=_gen())
    assert torch.equal(got, fgsm(trained_model, x, y, eps=0.1, norm="L2", random_start=True, step_size=0.125,
                                 generator=_gen()))


def test_scaled_multiplies_eps_and_an_explicit_step_only():
    half = PGD(eps=0.2, steps=4, step_size=0.04, start="normal").scaled(0.5)
    assert isinstance(half, PGD) and half.options == PGDOptions(eps=0.1, steps=4, step_size=0.02, start="normal")
    assert NoiseFGSM(eps=0.2).scaled(0.5).options.step_size is None


def test_unknown_options_are_user_errors():
    with pytest.raises(UserError, match="random_start"):
        make_attack("pgd", random_start=True)
