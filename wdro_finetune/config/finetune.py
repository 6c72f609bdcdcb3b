"""The fine-tuning configuration: a frozen dataclass composed of option groups, validated from CLI /
config-file options.

The groups: :class:`ModelData`, :class:`Optimisation`, :class:`Outputs` and one group per part kind of the
training method (:mod:`wdro_finetune.config.parts`). Users name options flat (``--beta``, ``beta:`` in a config
file or a sweep, ``cfg.beta`` in code, ``cfg.to_json()["beta"]``); each flat name belongs to exactly one group.
Fields made with :func:`~.options.option` are also command-line flags (the others come from the shared model
flags, or are config-file keys only).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import MISSING, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import (Dataset, ThreatModel, check_device, check_eps, default_eps, parse_dataset, parse_number,
               parse_threat_model, to_jsonable)
from ..errors import UserError
from .options import bounded, check_bounds, check_choices, convert_fields, flat_fields, option
from .parts import BaseLossOptions, InnerOptions, RegularizerOptions, ReweightOptions

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")

UNCAPPED = "none"  # --w2-budget-cap none: the uncapped W_2 budgets of the paper

# Fields that may change between a run and its --resume (everything else must match).
RESUMABLE_CHANGES = ("steps", "epochs", "out", "resume", "eval_after", "device", "checkpoint_every", "lr",
                     "progress", "records", "n_eval", "aa_version")


@dataclass(frozen=True)
class ModelData:
    """The model, its start and training data, the randomness and device (with the model and data flags)."""

    model: str
    dataset: Dataset
    threat_model: ThreatModel
    eps: float
    source: str | None = None
    checkpoint: str | None = None
    model_dir: str = "models"
    data_dir: str | None = None
    trust_checkpoint: bool = False
    pretrained: bool = option(True, "start from the source's pretrained weights (--no-pretrained: random init)")
    init: str = option("continue", "continue | reinit-head | perturb:SIGMA")
    train_subset: int | None = option(None, "use the first N training images", gt=0)
    holdout: int = option(500, "training images held out for the per-epoch PGD check", ge=0)
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class Optimisation:
    """Optimiser, schedule and length; lr per optimiser step."""

    epochs: int | None = option(None, "epochs over the training data", gt=0)
    steps: int | None = option(None, "optimiser steps (default 500 if no --epochs)", gt=0)
    lr: float = option(0.01, "peak learning rate", gt=0)
    optimizer: str = option("sgd", "optimiser (sgd: momentum 0.9, nesterov)", choices=OPTIMIZERS)
    momentum: float = bounded(0.9, ge=0)
    nesterov: bool = True
    schedule: str = option("cosine", "learning-rate schedule after the warm-up", choices=SCHEDULES)
    warmup: int = option(0, "linear warm-up steps", ge=0)
    weight_decay: float = option(5e-4, "weight decay (not on biases and norms)", ge=0)
    batch_size: int = bounded(128, gt=0)  # the flag: the shared model flags
    grad_clip: float | None = option(None, "max global gradient norm (default off)", gt=0)
    amp: bool | None = option(None, "bf16 autocast (default: on for CUDA)")
    channels_last: bool | None = option(None, "channels_last memory format (default: on for CUDA)")


@dataclass(frozen=True)
class Outputs:
    """The run folder, its checkpoints and the evaluation of the result (--eval-after)."""

    out: str = option("runs/finetune", "run folder")
    checkpoint_every: int = option(100, "steps between checkpoints", gt=0)
    resume: bool = option(False, "continue the run in --out", action="store_true")
    eval_after: tuple[str, ...] = option((), "metrics to evaluate on the result, e.g. clean,autoattack")
    n_eval: int = option(1000, "test examples for --eval-after", gt=0)
    aa_version: str = option("standard", "AutoAttack version for --eval-after")
    records: str = option("results", "records folder for --eval-after")


@dataclass(frozen=True, init=False)
class FinetuneConfig:
    """A fine-tuning run: option groups, read by their flat names (``cfg.beta``, ``cfg.out``).

    ``FinetuneConfig(model=..., dataset=..., beta=1.0)`` builds it from flat values (unchecked: use
    :func:`make_finetune_config`); whole groups may be passed too (``outputs=Outputs(...)``), and flat values
    override them, so ``dataclasses.replace(cfg, resume=True)`` works."""

    setup: ModelData
    base_loss: BaseLossOptions
    inner_maximiser: InnerOptions
    reweighting: ReweightOptions
    regularizer: RegularizerOptions
    optimisation: Optimisation
    outputs: Outputs

    def __init__(self, **values: Any):
        for group, cls in _groups().items():
            own = {k: values.pop(k) for k in flat_fields(cls) if k in values}
            given = values.pop(group, None)
            object.__setattr__(self, group, dataclasses.replace(given, **own) if given is not None else cls(**own))
        if values:
            raise TypeError(f"FinetuneConfig got unknown options {sorted(values)}")

    def __getattr__(self, name: str) -> Any:
        group = _group_of().get(name)
        if group is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(object.__getattribute__(self, group), name)

    @property
    def radius(self) -> float:
        """The inner maximiser's budget: delta for W_2, eps for pointwise."""
        return self.delta if self.threat == "w2" and self.delta is not None else self.eps

    def to_json(self) -> dict:
        """The flat options as JSON values (what run.json, checkpoints and records store)."""
        return {name: to_jsonable(getattr(self, name)) for name in _FIELDS}


@lru_cache(maxsize=None)
def _groups() -> dict[str, type]:
    return {f.name: typing.get_type_hints(FinetuneConfig)[f.name] for f in dataclasses.fields(FinetuneConfig)}


@lru_cache(maxsize=None)
def _group_of() -> dict[str, str]:
    return {name: group for group, cls in _groups().items() for name in flat_fields(cls)}


def option_groups() -> dict[str, type]:
    """{title: option dataclass} of the groups of :class:`FinetuneConfig`, in order (the command line's flag
    groups)."""
    return {name.replace("_", " "): cls for name, cls in _groups().items()}


def finetune_fields() -> dict[str, dataclasses.Field]:
    """{flat option name: its dataclass field} (defaults, types, help) of :class:`FinetuneConfig`."""
    return dict(_FIELDS)


def option_default(name: str) -> Any:
    """The default of the flat option ``name`` (None for a required one)."""
    default = _FIELDS[name].default
    return None if default is MISSING else default


_FIELDS = flat_fields(FinetuneConfig)


def make_finetune_config(options: dict[str, Any], registries: Mapping[str, Sequence[str]] | None = None
                         ) -> FinetuneConfig:
    """Validated config from resolved options (config file overridden by command-line flags); with ``resume``
    the options missing come from the run's ``run.json`` (``--resume --out DIR`` alone continues that run).
    ``registries``: the part names of the ``choices_from`` options (``--method``, ...; given by
    :func:`wdro_finetune.workflows.finetune.make_finetune_run`; without them an unknown part name is refused
    when the objective is built). The values only: the model folder and the ``--eval-after`` metrics are
    checked by :func:`~wdro_finetune.workflows.finetune.make_finetune_run`."""
    if options.get("resume") is True:
        from .saved_run import with_saved_options

        options = with_saved_options(options)
    for key in ("model", "dataset"):
        if not options.get(key):
            raise UserError(f"finetune needs --{key} (on the command line or in --config)")
    dataset = parse_dataset(options["dataset"])
    threat_model = parse_threat_model(options.get("threat_model") or "Linf")
    if threat_model not in (ThreatModel.LINF, ThreatModel.L2):
        raise UserError("fine-tuning needs --threat-model Linf or L2")
    eps = check_eps(parse_number(options["eps"], "--eps"), threat_model) if options.get("eps") is not None \
        else default_eps(dataset, threat_model)
    values = {k: v for k, v in options.items() if k in _FIELDS and v is not None}
    values.update(dataset=dataset, threat_model=threat_model, eps=eps)
    values = _coerce(values)
    _check_choices(values, registries)
    uncapped = values.get("w2_budget_cap") == UNCAPPED
    if uncapped:
        if values.get("threat") != "w2":
            raise UserError("--w2-budget-cap needs --threat w2")
        del values["w2_budget_cap"]
    _check_ranges(values)
    if values.get("threat") == "w2":
        values.setdefault("delta", eps)
        if not uncapped and values.get("w2_budget_cap") is None:  # safe default: no image's budget above eps
            values["w2_budget_cap"] = max(eps, values["delta"])
    if "ia" in str(values.get("triplet", "")).split("+") and (dataset, threat_model) != (Dataset.MNIST,
                                                                                        ThreatModel.LINF):
        raise UserError("--triplet ia / sa+ia needs --dataset mnist --threat-model Linf (invariance examples are "
                        "defined for MNIST l_inf)")
    _check_precomputed(values)
    config = FinetuneConfig(**values)
    check_device(config.device)
    return config


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    """Typed values by the one strict rule of :mod:`wdro_finetune.config.options`; ``armor_cost_p`` may be ``inf`` and
    ``w2_budget_cap`` ``none`` (uncapped)."""
    out = dict(values)
    if "armor_cost_p" in out:
        text = str(out["armor_cost_p"]).strip().lower()
        out["armor_cost_p"] = math.inf if text == "inf" else parse_number(out["armor_cost_p"], "--armor-cost-p")
    if isinstance(out.get("w2_budget_cap"), str) and out["w2_budget_cap"].strip().lower() == UNCAPPED:
        out["w2_budget_cap"] = UNCAPPED
    return convert_fields(FinetuneConfig, out, skip=("armor_cost_p",) + (
        ("w2_budget_cap",) if out.get("w2_budget_cap") == UNCAPPED else ()))


def _check_choices(values: dict[str, Any], registries: Mapping[str, Sequence[str]] | None) -> None:
    check_choices(_FIELDS.values(), values, registries)
    init = str(values.get("init", "continue"))
    if init not in ("continue", "reinit-head") and not init.startswith("perturb:"):
        raise UserError(f"--init must be continue, reinit-head or perturb:SIGMA, got {init!r}")
    if init.startswith("perturb:"):
        sigma = parse_number(init.split(":", 1)[1], "--init perturb:SIGMA")
        if sigma <= 0:
            raise UserError("--init perturb:SIGMA needs SIGMA > 0")


def _check_ranges(values: dict[str, Any]) -> None:
    if values.get("epochs") is not None and values.get("steps") is not None:
        raise UserError("give --epochs or --steps, not both")
    if values.get("epochs") is None and values.get("steps") is None:
        values["steps"] = 500
    check_bounds(_FIELDS.values(), values)  # the bounds declared on the fields (gt / ge / le)
    if values.get("delta") is not None:
        check_eps(values["delta"], values["threat_model"], "--delta")
    cap = values.get("w2_budget_cap")
    if cap is not None:
        if values.get("threat") != "w2":
            raise UserError("--w2-budget-cap needs --threat w2")
        if cap < values.get("delta", values["eps"]):
            raise UserError(f"--w2-budget-cap ({cap:g}) must be >= --delta ({values.get('delta', values['eps']):g})")
    if values.get("w2_stop_flipped") and values.get("threat") != "w2":
        raise UserError("--w2-stop-flipped needs --threat w2")
    if values.get("w2_inner", "budget") != "budget" and (values.get("threat") != "w2" or values.get("w2_stop_flipped")):
        raise UserError(f"--w2-inner {values['w2_inner']} needs --threat w2 (and has no --w2-stop-flipped)")
    if values.get("armor_cost_p", 2.0) not in (1.0, 2.0, math.inf):
        raise UserError(f"--armor-cost-p must be 1, 2 or inf, got {values['armor_cost_p']}")


def _check_precomputed(values: dict[str, Any]) -> None:
    """``--inner-examples precomputed-fgsm``: stored FGSM examples of the un-augmented training images replace the
    pointwise inner attack, so no option that shapes that attack goes with them; ``--precomputed-eps`` is set
    to ``--eps`` when not given."""
    if values.get("inner_examples", "attack") == "attack":
        for key in ("precomputed_eps", "precomputed_source"):
            if values.get(key) is not None:
                raise UserError(f"--{key.replace('_', '-')} needs --inner-examples precomputed-fgsm")
        return
    source = values.get("precomputed_source")
    if source is not None and not Path(source).is_file():
        raise UserError(f"--precomputed-source {source}: no such file")
    given = {"--threat w2": values.get("threat") == "w2", "--method udr": values.get("method") == "udr",
             "--armor-cost-weight": bool(values.get("armor_cost_weight")), "--eps-ramp": bool(values.get("eps_ramp")),
             "--inner-step-size": values.get("inner_step_size") is not None}
    if any(given.values()):
        raise UserError(f"--inner-examples {values['inner_examples']} replaces the pointwise inner attack; it does "
                        f"not go with {', '.join(flag for flag, on in given.items() if on)}")
    if values["dataset"] is not Dataset.MNIST:
        raise UserError(f"--inner-examples {values['inner_examples']} needs --dataset mnist (training without "
                        f"augmentation: the examples are those of the un-augmented images)")
    values["precomputed_eps"] = check_eps(values.get("precomputed_eps", values["eps"]), values["threat_model"],
                                          "--precomputed-eps")
