"""The registries of training parts: their names are the config's choices (written once, in the registries),
their options are the config's fields, and every combination of parts either builds or is refused with a
one-line UserError."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from wdro_finetune.config.finetune import FinetuneConfig, finetune_fields, make_finetune_config, option_groups
from wdro_finetune.errors import UserError
from wdro_finetune.methods.factory import build_objective
from wdro_finetune.methods.parts import (BASE_LOSSES, INNER_ATTACKS, PART_CHOICES, REGULARIZERS, REWEIGHTINGS,
                                         SIGNED_DISTANCE, THREATS)
from wdro_finetune.methods.triplet import MINERS

REGISTRIES = {BASE_LOSSES: "method", THREATS: "threat", REWEIGHTINGS: "reweight", REGULARIZERS: "triplet",
              MINERS: "triplet_miner"}


@pytest.mark.parametrize("registry", list(REGISTRIES), ids=lambda r: r.kind)
def test_each_registry_supplies_the_choices_of_its_option(registry):
    field = finetune_fields()[REGISTRIES[registry]]
    assert field.metadata["choices_from"] == field.name and field.metadata["choices"] is None
    assert PART_CHOICES[field.name] == tuple(registry.names())


def test_every_part_choice_of_the_config_has_its_names_and_a_valid_default():
    keyed = {name: f for name, f in finetune_fields().items() if f.metadata.get("choices_from")}
    assert set(keyed) == set(PART_CHOICES)
    assert all(f.default in PART_CHOICES[f.metadata["choices_from"]] for f in keyed.values())
    assert PART_CHOICES["w2_inner"] == ("budget", "knapsack")
    assert PART_CHOICES["triplet_distance"] == tuple(SIGNED_DISTANCE)


def test_every_part_reads_only_options_of_the_config():
    fields = finetune_fields()
    for registry in (*REGISTRIES, INNER_ATTACKS):
        for name in registry.names():
            entry = registry.get(name)
            assert {f.name for f in dataclasses.fields(entry.Options)} <= set(fields), (registry.kind, name)
    assert set(PART_CHOICES["w2_inner"]) <= set(INNER_ATTACKS.names())


def test_each_flat_option_belongs_to_one_group_and_to_json_names_them_all():
    names = [f.name for cls in option_groups().values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(finetune_fields())
    cfg = make_finetune_config(dict(model="m", dataset="mnist", beta=2.0, out="o"))
    assert set(cfg.to_json()) == set(finetune_fields())
    assert (cfg.beta, cfg.out, cfg.base_loss.beta, cfg.outputs.out) == (2.0, "o", 2.0, "o")
    resumed = dataclasses.replace(cfg, resume=True, lr=0.5)
    assert (resumed.resume, resumed.lr, resumed.beta) == (True, 0.5, 2.0) and not cfg.resume
    with pytest.raises(TypeError, match="nope"):
        FinetuneConfig(**{**cfg.to_json(), "nope": 1})
    with pytest.raises(AttributeError):
        cfg.nope  # noqa: B018


@pytest.mark.parametrize("method, threat", list(itertools.product(PART_CHOICES["method"], PART_CHOICES["threat"])))
def test_every_base_loss_with_every_threat_builds_or_is_a_user_error(method, threat):
    for extra in ({}, {"eps_ramp": 2}, {"armor_cost_weight": 1.0}, {"w2_inner": "knapsack"}):
        if "w2_inner" in extra and threat != "w2":
            continue
        options = dict(model="m", dataset="mnist", method=method, threat=threat, inner_steps=2, **extra)
        try:
            objective = build_objective(make_finetune_config(options))
        except UserError as exc:
            assert "\n" not in str(exc)
            continue
        assert objective.label.endswith(method)


@pytest.mark.parametrize("name", ["pgd", "fgsm", "n-fgsm"])
def test_the_pointwise_inner_maximisers_are_the_registered_attacks(name):
    from wdro_finetune.attacks import ATTACKS
    from wdro_finetune.methods.parts import Setting

    opts = INNER_ATTACKS.get(name).Options(inner_steps=3, inner_step_size=None)
    attack = INNER_ATTACKS.get(name).build(opts, Setting(eps=0.1, norm="L2", steps=3, start="normal"))
    assert type(attack) is ATTACKS.get(name)
    assert (attack.options.eps, attack.options.norm) == (0.1, "L2")
