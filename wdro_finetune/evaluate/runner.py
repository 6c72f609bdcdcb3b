"""The evaluation runner: load a model and the test split, run the chosen metrics, write a record.

Metrics are looked up in :data:`~wdro_finetune.evaluate.metric.METRICS`; adding one never touches
this module.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import to_jsonable
from ..config.evaluation import EvalConfig, build_eval_config
from ..config.options import canonical_keys, option_fields, option_label
from ..data.datasets import load_split, split_size
from ..errors import UserError
from ..models import PLUGIN_FACTORY, RANDOM_INIT, LoadedModel, check_model_dir, load_model
from ..models.outputs import check_split
from ..results.best_known import best_known
from ..results.provenance import git_commit, known_run, package_versions, portable_path, utc_now
from ..results.records import append_record, read_records, records_output_paths, save_per_example, stable_hash
from ..distributed import barrier, init_distributed
from ..utils.fileio import check_output_paths, ensure_writable_dir
from . import autoattack, clean, distances, invariance, wdro  # noqa: F401  (register the built-in metrics)
from .metric import METRICS, EvalContext, MetricOutput
from .sharding import shard_context
from .values import MetricValue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    record: dict
    values: dict[str, MetricValue]


def make_eval_config(options: dict[str, Any], *, shared_options: bool = False) -> EvalConfig:
    """Validate resolved options (CLI + config file) into an :class:`EvalConfig`
    (:func:`~wdro_finetune.config.evaluation.build_eval_config` with the metric registry, the test split sizes and
    the model folder check). An option of a metric not in ``metrics`` is refused, except with ``shared_options``
    (a sweep's common evaluation options reach jobs that run other metrics). Keys may be spelled after a flag
    (``deltas``) or its alias (:func:`canonical_options`)."""
    options = canonical_options(options)

    def per_metric(names: tuple[str, ...], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        if not names:
            raise UserError(f"--metrics needs at least one of {', '.join(METRICS.names())}")
        chosen = {name: METRICS.get(name).options_from(values) for name in names}
        if not shared_options:
            _check_unused_metric_options(values, names)
        return chosen

    config = build_eval_config(options, metric_options=per_metric, test_size=lambda d: split_size(d, "test"),
                               random_init=RANDOM_INIT)
    check_model_dir(config.model, config.source, config.dataset, config.threat_model, options.get("model_dir"),
                    config.checkpoint)
    return config


def canonical_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the metrics' flag spellings as keys renamed to the option names (``deltas`` -> ``delta``,
    the key records and sweep job ids keep)."""
    return canonical_keys([f for name in METRICS.names() for f in option_fields(METRICS.get(name).Options)], options)


def option_names() -> set[str]:
    """Every option :func:`make_eval_config` reads: the fields of :class:`EvalConfig` and the metrics' options."""
    return set(EvalConfig.__dataclass_fields__) | {k for name in METRICS.names() for k in _declared(name)}


def _declared(name: str) -> set[str]:
    """The options metric ``name`` declares (its ``Options`` fields with a flag)."""
    return {f.name for f in option_fields(METRICS.get(name).Options)}


def _check_unused_metric_options(options: dict[str, Any], names: tuple[str, ...]) -> None:
    """UserError for an option of a metric that ``--metrics`` does not include (it would be ignored)."""
    used = set().union(*(_declared(name) | set(METRICS.get(name).reads) for name in names))
    unused = sorted(k for k in option_names() - set(EvalConfig.__dataclass_fields__) - used
                    if options.get(k) is not None)
    if unused:
        raise UserError(f"{', '.join(option_label(k) for k in unused)}: option(s) of a metric that --metrics "
                        f"({','.join(names)}) does not include")


def evaluate(config: EvalConfig, *, model: LoadedModel | None = None, progress: bool = False) -> EvalResult:
    """Run every metric of ``config`` and append one record to ``<records>/records.jsonl``.

    Under ``torchrun`` (WORLD_SIZE > 1) shardable metrics split the examples over the ranks and only
    rank 0 writes; every rank returns the same result.
    """
    info = init_distributed(config.device)
    check_output_paths(*output_paths(config))  # fail fast; create nothing until the model and data are loaded
    started, t0 = utc_now(), time.perf_counter()
    metrics = [METRICS.get(name)(**config.metric_options.get(name, {})) for name in config.metrics]
    # data first: a missing test split fails before a (possibly long) model download
    data = load_split(config.dataset, "test", config.n_examples, data_dir=config.data_dir,
                      allow_lossy_test=config.allow_lossy_test)
    loaded = model or load_model(config.model, config.dataset, config.threat_model, source=config.source,
                                 checkpoint=config.checkpoint, model_dir=config.model_dir,
                                 pretrained=config.pretrained, trust_checkpoint=config.trust_checkpoint)
    check_split(loaded.module.to(config.device).eval(), data, config.device, config.model)
    config = _label_factory_weights(config, loaded)
    record = _record_head(config, loaded, data)
    records_dir = ensure_writable_dir(config.records)
    state_dir = records_dir / "partial" / record["record_id"]
    ctx = EvalContext(model=loaded.module.to(config.device).eval(), data=data, dataset=config.dataset,
                      threat_model=config.threat_model, eps=config.eps, device=config.device,
                      batch_size=config.batch_size, seed=config.seed, state_dir=state_dir,
                      progress=progress and info.is_main)
    shard = shard_context(ctx, info)
    outputs = [_run_metric(m, shard if m.shardable else ctx, ctx.per_example) for m in metrics]
    values = {k: v for out in outputs for k, v in out.values.items()}
    labels = {k: v for out in outputs for k, v in out.labels.items()}
    _add_best_known(values, labels)
    record.update(metrics={k: v.to_json() for k, v in values.items()}, labels=labels,
                  started_at=started, wall_seconds=round(time.perf_counter() - t0, 3))
    barrier(info)  # every rank has finished with the partial state
    if info.is_main:
        save_per_example(records_dir, record["record_id"], ctx.per_example)
        append_record(records_dir, record)
        shutil.rmtree(state_dir, ignore_errors=True)
    return EvalResult(record, values)


def _add_best_known(values: dict[str, MetricValue], labels: dict[str, str]) -> None:
    """With both W-PGD and the knapsack attack in one evaluation: ``w2_best_acc@d`` (the lower) and its attack."""
    if any(k.startswith("w2_acc@") for k in values) and any(k.startswith("w2k_acc@") for k in values):
        best, best_labels = best_known({k: v.to_json() for k, v in values.items()})
        values.update({k: MetricValue.from_json(v) for k, v in best.items()})
        labels.update(best_labels)


def output_paths(config: EvalConfig) -> tuple[list[Path], list[Path]]:
    """(folders, files) an evaluation writes: the records' and every metric's (e.g. an invariance cache)."""
    folders, files = records_output_paths(config.records)
    for name in config.metrics:
        folders += [Path(p) for p in METRICS.get(name).output_dirs(config.metric_options.get(name, {}))]
    return folders, files


def _label_factory_weights(config: EvalConfig, loaded: LoadedModel) -> EvalConfig:
    """A plugin without weights is recorded as method ``plugin-factory``, never as ``pretrained``."""
    if loaded.origin != "factory" or config.method != "pretrained":
        return config
    log.warning("plugin model %s has no --checkpoint: evaluating the weights its factory made, recorded as "
                "method %s", config.model, PLUGIN_FACTORY)
    return dataclasses.replace(config, method=PLUGIN_FACTORY)


def _run_metric(metric, ctx: EvalContext, per_example: dict) -> MetricOutput:
    log.info("metric %s", metric.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        out = metric.compute(ctx)
    per_example.update(out.per_example)
    return out


def _record_head(config: EvalConfig, loaded: LoadedModel, data) -> dict:
    run = None  # weights of a known fine-tune (e.g. its RobustBench-layout copy) are recorded as that run
    if config.method == "pretrained" and config.training is None:
        run = known_run(loaded.weights_path, loaded.weights_sha256, read_records(config.records))
    identity = {
        "model": config.model, "source": loaded.source, "checkpoint_sha256": loaded.weights_sha256,
        "method": run["method"] if run else config.method, "dataset": config.dataset.value,
        "threat_model": config.threat_model.value,
        "eps": config.eps, "n_examples": len(data), "data_sha256": data.sha256, "data_file": Path(data.file).name,
        "metrics": list(config.metrics), "metric_options": to_jsonable(config.metric_options), "seed": config.seed,
    }
    return {
        "record_id": stable_hash(identity), **identity, "checkpoint": portable_path(loaded.weights_path),
        "weights": loaded.origin, "data_lossy": data.lossy, "training": run["training"] if run else config.training,
        "job_id": config.job_id, **({"linked_run": run["linked_run"]} if run else {}),
        "device": config.device, "batch_size": config.batch_size, "versions": package_versions(),
        "git_commit": git_commit(),
    }
