"""The evaluation configuration: one frozen dataclass, validated from CLI / config-file / sweep options.

The config package sits below the metrics, the data and the models, so what only they know comes in as
arguments of :func:`build_eval_config` (``evaluate.runner.make_eval_config`` passes them): each metric's
validated options, the size of a test split and the method label of initial (untrained) weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from . import Dataset, ThreatModel, check_device, check_eps, default_eps, parse_dataset, parse_number, parse_threat_model
from ..errors import UserError
from .options import bounded, check_bounds, convert_fields

DEFAULT_METRICS = ("clean", "autoattack")

# metric names, resolved options -> {metric name: its validated options (the record's ``metric_options``)}
MetricOptions = Callable[[tuple[str, ...], dict[str, Any]], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation. ``eps`` in pixel units of [0, 1]; ``metric_options`` per metric name."""

    model: str
    dataset: Dataset
    threat_model: ThreatModel
    eps: float
    n_examples: int
    metrics: tuple[str, ...] = DEFAULT_METRICS
    metric_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str | None = None
    checkpoint: str | None = None
    model_dir: str = "models"
    data_dir: str | None = None
    allow_lossy_test: bool = False
    batch_size: int = bounded(250, ge=1)
    device: str = "cpu"
    seed: int = 0
    records: str = "results"
    method: str = "pretrained"
    training: dict[str, Any] | None = None  # hyper-parameters of the fine-tuning that made the model
    trust_checkpoint: bool = False
    job_id: str | None = None  # the sweep job this evaluation belongs to
    pretrained: bool = True  # False: the architecture with its initial weights (recorded as method random-init)


def build_eval_config(options: dict[str, Any], *, metric_options: MetricOptions, test_size: Callable[[Dataset], int],
                      random_init: str) -> EvalConfig:
    """Validate resolved options into an :class:`EvalConfig` (values converted by the one strict rule of
    :mod:`.options`). ``metric_options(names, options)`` validates the metrics' options, ``test_size(dataset)``
    is the number of test examples, ``random_init`` the method label of ``pretrained: false`` without a
    checkpoint. Nothing is loaded or downloaded."""
    options = convert_fields(EvalConfig, options)
    dataset = parse_dataset(options["dataset"])
    threat = parse_threat_model(options.get("threat_model") or "Linf")
    eps = options.get("eps")
    eps = check_eps(parse_number(eps, "eps"), threat) if eps is not None else default_eps(dataset, threat)
    names = DEFAULT_METRICS if options.get("metrics") is None else options["metrics"]
    per_metric = metric_options(names, options)
    n = _given(options, "n_examples", 1000)
    total = test_size(dataset)
    if not 1 <= n <= total:  # checked before any model is loaded or downloaded
        raise UserError(f"n_examples must be between 1 and {total} for the {dataset.value} test split, got {n}")
    batch_size = _given(options, "batch_size", 250)
    check_bounds(fields(EvalConfig), {"batch_size": batch_size})
    device = check_device(options.get("device") or "cpu")
    pretrained = _given(options, "pretrained", True)
    method = options.get("method") or ("pretrained" if pretrained or options.get("checkpoint") else random_init)
    return EvalConfig(model=options["model"], dataset=dataset, threat_model=threat, eps=eps, n_examples=n,
                      metrics=names, metric_options=per_metric, source=options.get("source"),
                      checkpoint=options.get("checkpoint"), model_dir=options.get("model_dir") or "models",
                      data_dir=options.get("data_dir"), allow_lossy_test=_given(options, "allow_lossy_test", False),
                      batch_size=batch_size, device=device, seed=_given(options, "seed", 0),
                      records=options.get("records") or "results", method=method, training=options.get("training"),
                      trust_checkpoint=_given(options, "trust_checkpoint", False), job_id=options.get("job_id"),
                      pretrained=pretrained)


def _given(options: dict[str, Any], name: str, default: Any) -> Any:
    """An option's (converted) value, ``default`` when unset (0 and False are values, not "unset")."""
    value = options.get(name)
    return default if value is None else value
