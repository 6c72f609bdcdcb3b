"""The Python API, as simple as the CLI: one call per job, the same option names as the command's flags
(with underscores), typed results.

    from wdro_finetune.api import evaluate, finetune
    result = evaluate("mnist-smallcnn", "mnist", metrics="clean,wdro,distances", delta="1/20,1/10,1/5")
    result.values["w2_best_acc@1/5"].value      # percent; .lo / .hi: the 95% Wilson interval; .n
    run = finetune("mnist-smallcnn", "mnist", method="trades", threat="w2", delta=0.2, steps=300, out="runs/a")
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .evaluate.runner import EvalResult
from .train.loop import FinetuneResult


def evaluate(model: str | nn.Module, dataset: str, *, progress: bool = False, **options: Any) -> EvalResult:
    """Evaluate ``model`` (a model name as for ``--model``, or an ``nn.Module`` mapping [0, 1] images to logits)
    on ``dataset``'s test split; append the record to ``records`` (default ``results/``) and return it with
    its typed values. Options: those of ``wdro-finetune evaluate`` (``metrics``, ``n_examples``, ``eps``,
    ``delta``, ``aa_version``, ``dist_norm``, ...)."""
    from .evaluate.runner import evaluate as run_evaluation, make_eval_config
    from .models import LoadedModel

    name = model if isinstance(model, str) else options.pop("name", type(model).__name__)
    config = make_eval_config({**options, "model": name, "dataset": dataset})
    loaded = None if isinstance(model, str) else LoadedModel(model.eval(), name, "module", None, None)
    return run_evaluation(config, model=loaded, progress=progress)


def finetune(model: str, dataset: str, *, progress: bool = False, **options: Any) -> FinetuneResult:
    """Fine-tune ``model`` on ``dataset`` with the options of ``wdro-finetune finetune`` (``method``, ``threat``,
    ``delta``, ``steps``, ``out``, ...); returns the run's result (label, paths)."""
    from .workflows.finetune import finetune as run_finetune, make_finetune_run

    return run_finetune(make_finetune_run({**options, "model": model, "dataset": dataset}), progress=progress)
