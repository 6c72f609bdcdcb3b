"""Fine-tuning as a user runs it: options checked against the world (model folder, ``--eval-after``
metrics) before any step, the engine, then the ``--eval-after`` evaluation of the result; and the sweep's and
demo's reuse of a finished run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config.finetune import FinetuneConfig, make_finetune_config
from ..config.saved_run import read_run
from ..evaluate.runner import evaluate, make_eval_config, output_paths as eval_output_paths
from ..methods.parts import PART_CHOICES
from ..models import LoadedModel, check_model_dir
from ..train.checkpoints import checkpoint_dir
from ..train.loop import FinetuneResult, finetune as train


def make_finetune_run(options: dict[str, Any]) -> FinetuneConfig:
    """:func:`~wdro_finetune.config.finetune.make_finetune_config` (with the part names of the registries), then
    the checks that look outside the options: the model folder exists where needed, the ``--eval-after``
    evaluation is valid (now, not after hours of training)."""
    cfg = make_finetune_config(options, PART_CHOICES)
    check_model_dir(cfg.model, cfg.source, cfg.dataset, cfg.threat_model, options.get("model_dir"), cfg.checkpoint)
    if cfg.eval_after:
        make_eval_config(eval_after_options(cfg))
    return cfg


def finetune(cfg: FinetuneConfig, *, progress: bool = False) -> FinetuneResult:
    """Train as ``cfg`` says; with ``--eval-after`` evaluate the result before the run counts as finished."""
    if not cfg.eval_after:
        return train(cfg, progress=progress)
    eval_cfg = make_eval_config(eval_after_options(cfg))

    def evaluate_result(loaded: LoadedModel, label: str, training: dict) -> list[dict]:
        options = {**eval_after_options(cfg), "source": loaded.source, "method": label,
                   "checkpoint": loaded.weights_path, "training": training}
        return [evaluate(make_eval_config(options), model=loaded, progress=progress).record]

    return train(cfg, progress=progress, after=evaluate_result, more_outputs=eval_output_paths(eval_cfg))


def eval_after_options(cfg: FinetuneConfig) -> dict[str, Any]:
    """Options of the ``--eval-after`` evaluation (input of ``evaluate.runner.make_eval_config``); the
    fine-tuned model's identity (source, method, checkpoint, training) is added once it exists."""
    return {"model": cfg.model, "dataset": cfg.dataset.value, "threat_model": cfg.threat_model.value, "eps": cfg.eps,
            "n_examples": cfg.n_eval, "metrics": ",".join(cfg.eval_after), "device": cfg.device, "seed": cfg.seed,
            "records": cfg.records, "data_dir": cfg.data_dir,
            "aa_version": cfg.aa_version if "autoattack" in cfg.eval_after else None}


def finetune_or_reuse(options: dict, *, progress: bool = False) -> tuple[FinetuneConfig, str]:
    """Fine-tune into ``options['out']``: reuse the run there if it finished, resume it from its
    checkpoints if it was interrupted, else start it. Returns (config with resume off, method label)."""
    out = Path(options["out"])
    run = read_run(out) or {}
    config = make_finetune_run({**options, "resume": False})
    if run.get("status") == "finished" and (out / "model.safetensors").is_file():
        return config, run["label"]
    resume = any(checkpoint_dir(out).glob("step_*.pt"))
    result = finetune(dataclasses.replace(config, resume=resume), progress=progress)
    return config, result.label
