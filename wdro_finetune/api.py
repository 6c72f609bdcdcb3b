"""The Python API, as simple as the CLI: one function per subcommand, the same option names as the command's
flags (with underscores), typed results.

    from wdro_finetune import api
    result = api.evaluate("mnist-smallcnn", "mnist", metrics="clean,wdro,distances", deltas="1/20,1/10,1/5")
    result.values["w2_best_acc@1/5"].value      # percent; .lo / .hi: the 95% Wilson interval; .n
    run = api.finetune("mnist-smallcnn", "mnist", method="trades", threat="w2", delta=0.2, steps=300, out="runs/a")
    api.leaderboard(records="results", out="leaderboards")   # the files written
    api.sweep("sweeps/mnist.yaml", dry_run=True).jobs        # the pending jobs

Errors in the options are :class:`~wdro_finetune.errors.UserError` with the CLI's one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch import nn

from .evaluate.runner import EvalResult
from .models import ModelEntry
from .train.loop import FinetuneResult
from .workflows.demo import DemoResult
from .workflows.invariance import GeneratedInvariance
from .workflows.options import (DemoOptions, ExportOptions, InvarianceOptions, LeaderboardOptions, ModelsOptions,
                                PlotOptions, SweepOptions, make_options)
from .workflows.report import summary_line
from .workflows.sweep import Job, SweepRun

__all__ = ["models", "evaluate", "finetune", "leaderboard", "export", "invariance", "sweep", "plot", "demo",
           "summary_line", "EvalResult", "FinetuneResult", "ModelEntry", "GeneratedInvariance", "SweepRun", "Job",
           "DemoResult"]


def models(**options: Any) -> list[ModelEntry]:
    """Known model names (:class:`~wdro_finetune.workflows.options.ModelsOptions`: ``source`` all, robustbench,
    builtin, timm or plugin; RobustBench names of ``dataset`` / ``threat_model`` only, if given; ``pattern``
    a wildcard filter for timm names)."""
    from .config import parse_dataset, parse_threat_model
    from .models import list_models

    o = make_options(ModelsOptions, options, "models")
    return list_models(o.source, parse_dataset(o.dataset) if o.dataset else None,
                       parse_threat_model(o.threat_model) if o.threat_model else None, o.pattern)


def evaluate(model: str | nn.Module, dataset: str, *, progress: bool = False, **options: Any) -> EvalResult:
    """Evaluate ``model`` (a model name as for ``--model``, or an ``nn.Module`` mapping [0, 1] images to logits)
    on ``dataset``'s test split; append the record to ``records`` (default ``results/``) and return it with
    its typed values. Options: those of ``wdro-finetune evaluate`` (``metrics``, ``n_examples``, ``eps``,
    ``deltas`` (or its old name ``delta``), ``aa_version``, ``dist_norm``, ...)."""
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


def leaderboard(**options: Any) -> list[Path]:
    """Rebuild the CSV leaderboards from ``records`` into ``out`` (and the HTML site into ``html``); options of
    :class:`~wdro_finetune.workflows.options.LeaderboardOptions`. Returns the files written."""
    from .workflows.leaderboard import leaderboard as build

    return build(make_options(LeaderboardOptions, options, "leaderboard"))


def export(format: str = "robustbench", **options: Any) -> list[Path]:
    """Export the leaderboard row holding ``record`` (robustbench: model_info JSON + RobustBench-layout weights
    under ``out``); options of :class:`~wdro_finetune.workflows.options.ExportOptions`. Returns the files."""
    from .workflows.export import PaperInfo, export as run_export

    o = make_options(ExportOptions, {**options, "format": format}, "export")
    paper = PaperInfo(o.paper_name, o.link, o.authors, o.venue, o.additional_data)
    return run_export(o.format, o.records, o.record, o.out, name=o.name, checkpoint=o.checkpoint, paper=paper)


def invariance(action: str = "generate", *, progress: bool = False, **options: Any) -> GeneratedInvariance:
    """``generate``: make (once; cached in ``out``) the l_inf invariance examples of the first ``n`` images of
    an MNIST ``split``; options of :class:`~wdro_finetune.workflows.options.InvarianceOptions`."""
    from .workflows.invariance import ACTIONS

    o = make_options(InvarianceOptions, {**options, "action": action}, "invariance")
    return ACTIONS[o.action](o, progress=progress)


def sweep(file: str | Path, *, progress: bool = False, report: Callable[[str], None] | None = None,
          **options: Any) -> SweepRun:
    """Run the pending jobs of the sweep ``file`` (``shard``, ``job``, ``dry_run``: see
    :class:`~wdro_finetune.workflows.options.SweepOptions`); ``report`` gets a line as each job starts and
    ends. Returns the jobs and their records."""
    from .workflows.sweep import run_sweep

    return run_sweep(make_options(SweepOptions, {**options, "file": str(file)}, "sweep"), progress=progress,
                     report=report)


def plot(kind: str, **options: Any) -> Path:
    """Write the ``kind`` figure (robustness-curve from ``records``, embeddings from ``model``) of ``dataset``
    to ``out``; options of :class:`~wdro_finetune.workflows.options.PlotOptions`. Returns the PNG's path."""
    from .workflows.plots import plot as draw

    return draw(make_options(PlotOptions, {**options, "kind": kind}, "plot"))


def demo(*, progress: bool = False, **options: Any) -> DemoResult:
    """The offline demo on the bundled MNIST model into ``out`` (``n_examples`` test images); options of
    :class:`~wdro_finetune.workflows.options.DemoOptions`."""
    from .workflows.demo import run_demo

    o = make_options(DemoOptions, options, "demo")
    return run_demo(o.out, n_examples=o.n_examples, progress=progress)
