"""The fine-tuning configuration: one frozen dataclass, validated from CLI / config-file options."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from . import (Dataset, ThreatModel, check_device, check_eps, default_eps, parse_dataset, parse_number,
                      parse_threat_model, to_jsonable)
from ..errors import UserError
from .options import convert_fields

METHODS = ("trades", "mart", "udr", "pgd-at", "fgsm-at", "n-fgsm-at")
THREATS = ("pointwise", "w2")
W2_INNERS = ("budget", "knapsack")  # W-PGD-budget, W-PGD-knapsack (the inner maximiser of --threat w2)
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
REWEIGHTS = ("none", "armor-kl", "armor-kl-learned", "armor-alpha")
TRIPLETS = ("none", "sa", "ia", "sa+ia")
MINERS = ("nearest", "semi-hard", "random")
DISTANCES = ("abs-cosine", "cosine")  # 1 - |cos| (TLA) or the signed 1 - cos

UNCAPPED = "none"  # --w2-budget-cap none: the uncapped W_2 budgets of the paper

# Fields that may change between a run and its --resume (everything else must match).
RESUMABLE_CHANGES = ("steps", "epochs", "out", "resume", "eval_after", "device", "checkpoint_every", "lr",
                     "progress", "records", "n_eval", "aa_version")


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run. Budgets (eps, delta) in pixel units of [0, 1]; lr per optimiser step."""

    model: str
    dataset: Dataset
    threat_model: ThreatModel
    eps: float
    method: str = "trades"
    threat: str = "pointwise"
    delta: float | None = None  # W_2 radius; defaults to eps
    w2_budget_cap: float | None = None  # per-sample cap on the W_2 budgets; with --threat w2 it defaults to
    # max(eps, delta); None (``--w2-budget-cap none``): uncapped, only the [0, 1] box (the paper's variant)
    w2_stop_flipped: bool = False  # budgets of images whose prediction already flipped stop growing
    w2_inner: str = "budget"  # W_2 inner maximiser: budget (W-PGD-budget) or knapsack (W-PGD-knapsack)
    beta: float = 6.0
    inner_steps: int = 10
    inner_step_size: float | None = None  # pointwise attacks' step (None: 2.5 eps / K; FGSM 1.25 eps)
    eps_ramp: int = 0  # eps warm-up: the inner radius grows linearly over this many steps (0: none)
    init: str = "continue"
    epochs: int | None = None
    steps: int | None = None
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "cosine"
    warmup: int = 0
    weight_decay: float = 5e-4
    batch_size: int = 128
    train_subset: int | None = None
    holdout: int = 500
    grad_clip: float | None = None
    seed: int = 0
    device: str = "cpu"
    amp: bool | None = None  # bf16 autocast; default on for CUDA
    channels_last: bool | None = None
    out: str = "runs/finetune"
    checkpoint_every: int = 100
    resume: bool = False
    eval_after: tuple[str, ...] = ()
    n_eval: int = 1000
    aa_version: str = "standard"
    records: str = "results"
    source: str | None = None
    checkpoint: str | None = None
    model_dir: str = "models"
    data_dir: str | None = None
    trust_checkpoint: bool = False
    inv_cache: str = "cache/invariance"  # invariance examples for L_ia (generated once, then reused)
    pretrained: bool = True  # start from the source's pretrained weights (False: random init)
    reweight: str = "none"
    armor_eps: float | None = None
    armor_kappa: float = 0.1
    armor_alpha: float = 6.0
    armor_t: float = 0.5
    armor_lr: float | None = None
    armor_cost_weight: float = 0.0  # soft-ball transport cost weight (0: hard eps-ball)
    armor_cost_p: float = 2.0
    armor_cost_q: float = 2.0
    triplet: str = "none"
    triplet_margin: float = 0.05
    triplet_weight_sa: float = 0.5
    triplet_weight_ia: float = 0.5
    triplet_norm_weight: float = 1e-4
    triplet_miner: str = "nearest"
    triplet_pool: int = 1
    triplet_distance: str = "abs-cosine"

    @property
    def radius(self) -> float:
        """The inner maximiser's budget: delta for W_2, eps for pointwise."""
        return self.delta if self.threat == "w2" and self.delta is not None else self.eps

    def to_json(self) -> dict:
        return to_jsonable(self)


_FIELDS = {f.name: f for f in dataclasses.fields(FinetuneConfig)}


def make_finetune_config(options: dict[str, Any]) -> FinetuneConfig:
    """Validated config from resolved options (config file overridden by command-line flags); with ``resume``
    the options missing come from the run's ``run.json`` (``--resume --out DIR`` alone continues that run).
    The values only: the model folder and the ``--eval-after`` metrics are checked by
    :func:`wdro_finetune.workflows.finetune.make_finetune_run`."""
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
    _check_choices(values)
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


def _check_choices(values: dict[str, Any]) -> None:
    for key, choices in (("method", METHODS), ("threat", THREATS), ("w2_inner", W2_INNERS), ("optimizer", OPTIMIZERS),
                         ("schedule", SCHEDULES), ("reweight", REWEIGHTS),
                         ("triplet", TRIPLETS), ("triplet_miner", MINERS),
                         ("triplet_distance", DISTANCES)):
        if key in values and values[key] not in choices:
            raise UserError(f"--{key} must be one of {', '.join(choices)}, got {values[key]!r}")
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
    positive = ("inner_steps", "epochs", "steps", "batch_size", "train_subset", "checkpoint_every", "lr", "n_eval",
                "triplet_pool", "armor_lr", "inner_step_size")
    for key in positive:
        if values.get(key) is not None and values[key] <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be > 0, got {values[key]}")
    for key in ("beta", "weight_decay", "warmup", "holdout", "momentum", "eps_ramp"):
        if values.get(key) is not None and values[key] < 0:
            raise UserError(f"--{key.replace('_', '-')} must be >= 0, got {values[key]}")
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
    if values.get("grad_clip") is not None and values["grad_clip"] <= 0:
        raise UserError("--grad-clip must be > 0")
    if values.get("armor_cost_weight", 0.0) < 0 or values.get("armor_cost_q", 2.0) <= 0:
        raise UserError("--armor-cost-weight must be >= 0 and --armor-cost-q > 0")
    if values.get("armor_cost_p", 2.0) not in (1.0, 2.0, math.inf):
        raise UserError(f"--armor-cost-p must be 1, 2 or inf, got {values['armor_cost_p']}")
    if not 0 <= values.get("armor_t", 0.5) <= 1:
        raise UserError("--armor-t must lie in [0, 1]")
