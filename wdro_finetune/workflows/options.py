"""The options of the commands that are no training or evaluation job (models, leaderboard, export, invariance,
sweep, plot, demo), declared once with :func:`~wdro_finetune.config.options.option`: default, help and choices.
The CLI makes its flags from these fields (argparse defaults = the fields' defaults: these commands read no
``--config`` file), the Python API takes the same names (:func:`make_options`).

Field types tell the CLI the flag's kind: ``bool`` a switch, ``int`` the strict integer, ``list`` a
repeatable flag; a field whose ``flag`` has no dashes is a positional argument; a field without a default is
a required flag.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from ..config import check_known_keys
from ..config.options import option
from ..errors import UserError

T = TypeVar("T")
SOURCES = ("robustbench", "builtin", "timm", "plugin")
_DATASET_HELP = "mnist, cifar10, cifar100 or imagenet"


def make_options(cls: type[T], values: dict[str, Any], command: str) -> T:
    """``cls`` from ``values`` (the API's keyword arguments): unknown or missing names and values outside a
    field's choices are one-line errors; the commands check the values themselves."""
    check_known_keys(values, {f.name for f in dataclasses.fields(cls)}, f"{command} options")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{command} needs {', '.join(missing)}")
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices and values.get(f.name) is not None and values[f.name] not in choices:
            raise UserError(f"{command}: {f.name} must be one of {', '.join(choices)}, got {values[f.name]!r}")
    return cls(**values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelsOptions:
    source: str = option("all", "", choices=("all", *SOURCES))
    dataset: str | None = option(None, _DATASET_HELP)
    threat_model: str | None = option(None, "Linf, L2 or corruptions (RobustBench names)")
    pattern: str = option("", "wildcard filter for timm names, e.g. 'resnet*'")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeaderboardOptions:
    records: str = option("results", "records folder")
    out: str = option("leaderboards", "output folder for CSVs and README.md")
    html: str | None = option(None, "also write the static HTML site to DIR", metavar="DIR")
    sweep: str | None = option(None, "the sweep file that made the records (the site names its jobs in the "
                                     "reproducing commands)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportOptions:
    format: str = option("robustbench", "robustbench: model_info JSON + RobustBench-layout weights",
                         flag="format", choices=("robustbench",))
    record: str = option(dataclasses.MISSING, "record id (the row it belongs to is exported)")
    records: str = option("results", "records folder")
    out: str = option("export", "folder for model_info/ and models/")
    name: str | None = option(None, "model name in RobustBench (default <model>_<method>)")
    checkpoint: str | None = option(None, "weights file, if not where the record says")
    paper_name: str = option("", "model_info name (default empty)")
    link: str = option("", "model_info link (default empty)")
    authors: str = option("", "model_info authors (default empty)")
    venue: str = option("", "model_info venue (default empty)")
    additional_data: bool = option(False, "the model was trained with extra data")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InvarianceOptions:
    action: str = option("generate", "generate (and cache) invariance examples", flag="action",
                         choices=("generate",))
    dataset: str = option("mnist", "only mnist is supported")
    eps: float | str = option("0.3", "l_inf radius in [0,1] pixel units")
    split: str = option("test", "split of the source images", choices=("train", "test"))
    n: int = option(100, "first N images of the split")
    grid: str = option("full", "full: 775 transforms (about 10 images/s on one core); fast: 63 transforms",
                       choices=("full", "fast"))
    out: str = option("cache/invariance", "cache folder")
    data_dir: str | None = option(None, "folder with mnist_train.npz / mnist_test.npz")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepOptions:
    file: str = option(dataclasses.MISSING, "sweep YAML file (grid of models x methods x seeds)", flag="file")
    shard: str | None = option(None, "run only shard i of n, e.g. 2/4 (no coordinator needed)")
    dry_run: bool = option(False, "print the jobs still to run and stop")
    job: list[str] | None = option(None, "run only this job id (repeatable)")
    prune: bool = option(False, "remove the records (and per-example files) of jobs no longer in the sweep file, i.e. superseded by an edited entry, and stop (with --dry-run: list them)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlotOptions:
    kind: str = option(dataclasses.MISSING, "robustness-curve: accuracy against the W_2 / W_inf budget, from "
                       "records; embeddings: 2-D PCA of penultimate features of clean, FGSM and invariance examples "
                       "(MNIST)", flag="kind", choices=("robustness-curve", "embeddings"))
    dataset: str = option(dataclasses.MISSING, "dataset to plot")
    out: str = option(dataclasses.MISSING, "output PNG file")
    # robustness-curve
    records: str = option("results", "records folder")
    threat_model: str = option("Linf", "threat model of the records to plot")
    # embeddings
    model: str | None = option(None, "model name (architecture and, without --checkpoint, weights)")
    source: str | None = option(None, "where the model comes from (inferred from the name if omitted)",
                                choices=SOURCES)
    checkpoint: list[str] | None = option(None, "weights file, one panel each (repeat to compare models; 'none' "
                                                "= the model's own weights)")
    title: list[str] | None = option(None, "panel title, one per --checkpoint")
    model_dir: str = option("models", "RobustBench-layout model folder")
    trust_checkpoint: bool = option(False, "allow .pt checkpoints with pickled code")
    n: int = option(300, "first N MNIST test images")
    eps: float | str = option("0.3", "l_inf radius of the FGSM and invariance examples")
    inv_grid: str = option("full", "invariance transform grid", choices=("full", "fast"))
    inv_cache: str = option("cache/invariance", "invariance cache folder")
    data_dir: str | None = option(None, "folder with the MNIST .npz files (also $WDRO_DATA_DIR)")


#: the plot options under their help headings (the first field of each group)
PLOT_GROUPS = {"records": "robustness-curve", "model": "embeddings"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoOptions:
    out: str = option("demo_output", "folder for the demo's records and leaderboards")
    n_examples: int = option(500, "MNIST test examples to evaluate")
