"""Command-line interface: parse, build typed configs, call the public API, map user errors to exit 2.

Every subcommand that runs a job accepts ``--config FILE`` (YAML or TOML); flags given on the
command line override the file.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import Interrupted, UserError

PROG = "wdro-finetune"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2), no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wdro-finetune`` console script. Warnings (ours and third-party) are held back and
    printed one line each at the end, before a final interrupt message; after a user error only its one line
    is printed."""
    rc, message = 0, None
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            rc = _main(argv)
    except UserError as exc:
        rc, message, caught = 2, f"{PROG}: error: {exc}", []
    except Interrupted as exc:
        rc, message = 130, f"{PROG}: {exc}"
    except KeyboardInterrupt:
        rc, message = 130, f"{PROG}: interrupted"
    finally:  # also before the traceback of a bug
        for w in caught:
            text = (str(w.message).strip().splitlines() or [""])[0]
            print(f"{PROG}: warning: {w.category.__name__}: {text}", file=sys.stderr)
    if message:
        print(message, file=sys.stderr)
    return rc


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    from .utils.allocator import keep_freed_memory

    keep_freed_memory()
    return int(args.func(args) or 0)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("wdro_finetune.progress").setLevel(logging.INFO)  # progress lines when stderr is no terminal


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only for real defaults that the help text does not already state (most
    options default to None so that a --config file can set them; their help says the effective default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Fine-tune robust image classifiers with distributional robust "
                     "training, evaluate them (AutoAttack, W-DRO attacks, invariance) and build leaderboards.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (add, func, help_text) in _COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             formatter_class=_HelpFormatter)
        add(cmd)
        cmd.set_defaults(func=func)
    return parser


# ---------------------------------------------------------------- models

def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="all", choices=["all", "robustbench", "builtin", "timm", "plugin"])
    p.add_argument("--dataset", default=None, help="mnist, cifar10, cifar100 or imagenet")
    p.add_argument("--threat-model", default=None, help="Linf, L2 or corruptions (RobustBench names)")
    p.add_argument("--pattern", default="", help="wildcard filter for timm names, e.g. 'resnet*'")


def _run_models(args: argparse.Namespace) -> int:
    from .config import parse_dataset, parse_threat_model
    from .models import list_models

    dataset = parse_dataset(args.dataset) if args.dataset else None
    threat = parse_threat_model(args.threat_model) if args.threat_model else None
    for entry in list_models(args.source, dataset, threat, args.pattern):
        extra = " ".join(x for x in (entry.dataset, entry.threat_model) if x)
        print(f"{entry.source}\t{entry.name}" + (f"\t{extra}" if extra else ""))
    return 0


# ---------------------------------------------------------------- evaluate

def _int(name: str) -> Callable[[str], int]:
    """argparse type: the one strict integer conversion of :mod:`wdro_finetune.config.options`."""
    from .config.options import to_int

    return lambda text: to_int(text, name)


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=None, help="model name: RobustBench name, builtin name, timm:<name>, "
                   "package.module:factory or an installed plugin entry point" + (" (required)" if required else ""))
    g.add_argument("--source", default=None, choices=["robustbench", "builtin", "timm", "plugin"],
                   help="where the model comes from (inferred from the name if omitted)")
    g.add_argument("--checkpoint", default=None, help="weights file (.safetensors or .pt) to load into the model")
    g.add_argument("--trust-checkpoint", action="store_true", default=None,
                   help="allow .pt checkpoints that contain arbitrary pickled objects (runs their code!)")
    g.add_argument("--model-dir", default=None, help="RobustBench-layout model folder (default ./models)")
    g.add_argument("--dataset", default=None, help="mnist, cifar10, cifar100 or imagenet")
    g.add_argument("--threat-model", default=None, help="Linf or L2 (default Linf)")
    g.add_argument("--eps", default=None, help="pointwise budget in [0,1] pixel units, e.g. 8/255 "
                   "(default: 0.3 MNIST Linf, 8/255 CIFAR Linf, 0.5 L2)")
    g.add_argument("--data-dir", default=None, help="folder with offline .npz files or torchvision downloads "
                   "(also $WDRO_DATA_DIR)")
    g.add_argument("--device", default=None, help="cpu or cuda[:i] (default cpu)")
    g.add_argument("--seed", default=None, help="random seed (default 0)")
    g.add_argument("--batch-size", default=None, help="examples per batch")
    g.add_argument("--config", default=None, help="YAML or TOML file with any of these options")


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    from .evaluate.metric import METRICS
    from .evaluate import runner  # noqa: F401  (registers metrics)

    _add_model_args(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--n-examples", default=None, help="first N test examples (default 1000)")
    g.add_argument("--metrics", default=None, help=f"comma-separated, from {', '.join(METRICS.names())} "
                   "(default clean,autoattack)")
    g.add_argument("--allow-lossy-test", action="store_true", default=None,
                   help="CIFAR-10 offline with n > 1000: use the lossy JPEG copy of the test set")
    g.add_argument("--records", default=None, help="records folder (default ./results)")
    g.add_argument("--pretrained", default=None, action=argparse.BooleanOptionalAction,
                   help="the source's pretrained weights (--no-pretrained: the architecture with its initial "
                        "weights, recorded as method random-init; e.g. a timm model offline)")
    g.add_argument("--method", default=None, help=argparse.SUPPRESS)
    for name in METRICS.names():
        METRICS.get(name).add_arguments(p)


def resolve_options(args: argparse.Namespace, exclude: tuple[str, ...] = ("func", "verbose", "command")) -> dict:
    """Options from ``--config`` overridden by flags given on the command line (non-None)."""
    from .config import load_config_file

    options: dict[str, Any] = load_config_file(args.config) if getattr(args, "config", None) else {}
    options.update({k: v for k, v in vars(args).items() if v is not None and k not in exclude + ("config",)})
    return options


def _option_names(add: Callable[[argparse.ArgumentParser], None]) -> set[str]:
    """Destinations of a subcommand's flags (the keys a config file may set)."""
    parser = _Parser(add_help=False)
    add(parser)
    return {a.dest for a in parser._actions}


def _run_evaluate(args: argparse.Namespace) -> int:
    from .config import check_known_keys
    from .config.evaluation import EvalConfig
    from .evaluate.runner import evaluate, make_eval_config

    options = resolve_options(args)
    check_known_keys(options, _option_names(_add_evaluate) | set(EvalConfig.__dataclass_fields__), "evaluate options")
    if not options.get("model") or not options.get("dataset"):
        raise UserError("evaluate needs --model and --dataset (on the command line or in --config)")
    config = make_eval_config(options)
    result = evaluate(config, progress=True)
    print(_summary_line(result.record))
    return 0


def _summary_line(record: dict) -> str:
    parts = [f"{record['model']} ({record['method']}) {record['dataset']} {record['threat_model']} "
             f"eps={record['eps']:.4g} n={record['n_examples']}:"]
    for name, val in record["metrics"].items():
        ci = f" [{val['lo']:.1f}, {val['hi']:.1f}]" if val.get("lo") is not None else ""
        parts.append(f"{name}={val['value']:.2f}{ci}")
    return " ".join(parts) + f"  (record {record['record_id']})"


# ---------------------------------------------------------------- finetune

def _add_finetune(p: argparse.ArgumentParser) -> None:
    from .config.finetune import (DISTANCES, METHODS, MINERS, OPTIMIZERS, REWEIGHTS, SCHEDULES, THREATS, TRIPLETS,
                               W2_INNERS)

    _add_model_args(p)
    g = p.add_argument_group("method")
    g.add_argument("--method", default=None, choices=METHODS, help="base method (default trades)")
    g.add_argument("--threat", default=None, choices=THREATS,
                   help="pointwise eps-ball, or w2: W-DRO (W_2 ball of radius --delta over the batch)")
    g.add_argument("--delta", default=None, help="W_2 radius in [0,1] pixel units (default: eps)")
    g.add_argument("--w2-budget-cap", default=None,
                   help="with --threat w2: no image's budget exceeds this (>= delta; default: none)")
    g.add_argument("--w2-stop-flipped", default=None, action=argparse.BooleanOptionalAction,
                   help="with --threat w2: an image's budget stops growing once its prediction has flipped "
                        "(budget goes to images not yet flipped; default: off)")
    g.add_argument("--w2-inner", default=None, choices=W2_INNERS,
                   help="with --threat w2: the inner maximiser, budget (W-PGD-budget, default) or knapsack "
                        "(radii from estimated distances to the boundary, allocated like the exact W_2 worst case)")
    g.add_argument("--beta", default=None, help="TRADES weight of the KL term (default 6)")
    g.add_argument("--inner-steps", default=None, help="attack steps of the inner maximisation (default 10)")
    g.add_argument("--inner-step-size", default=None,
                   help="step of the pointwise inner attack in [0,1] pixel units (default 2.5*eps/K; fgsm-at 1.25*eps; n-fgsm-at eps)")
    g.add_argument("--eps-ramp", default=None,
                   help="eps warm-up: the inner radius and step grow linearly from 1/N to full over the first N "
                        "steps (default 0: none)")
    g.add_argument("--init", default=None, help="continue | reinit-head | perturb:SIGMA (default continue)")
    g.add_argument("--reweight", default=None, choices=REWEIGHTS, help="ARMOR_D re-weighting (default none)")
    g.add_argument("--armor-eps", default=None, help="ARMOR_D divergence budget (default 0.02 KL, 0.5 alpha)")
    g.add_argument("--armor-kappa", default=None, help="armor-kl temperature floor (default 0.1)")
    g.add_argument("--armor-alpha", default=None, help="armor-alpha divergence order > 1 (default 6)")
    g.add_argument("--armor-t", default=None, help="weight of clean CE mixed into the ARMOR_D loss (default 0.5)")
    g.add_argument("--armor-lr", default=None, help="learning rate of learned ARMOR_D scalars (default: --lr); "
                   "follows the schedule")
    g.add_argument("--armor-cost-weight", default=None,
                   help="soft-ball transport: the attacker pays W * ||x'-x||_p^q instead of a hard eps-ball, and "
                        "the per-sample losses include -cost (default 0: hard ball)")
    g.add_argument("--armor-cost-p", default=None, help="norm of the transport cost: 1, 2 or inf (default 2)")
    g.add_argument("--armor-cost-q", default=None, help="exponent of the transport cost (default 2)")
    g.add_argument("--pretrained", default=None, action=argparse.BooleanOptionalAction,
                   help="start from the source's pretrained weights (--no-pretrained: random init)")
    g.add_argument("--triplet", default=None, choices=TRIPLETS,
                   help="angular triplet regulariser: sa = sensitivity positives (the base's adversarial "
                        "examples), ia = invariance positives (MNIST; generated once with the fast grid and "
                        "cached in --inv-cache), sa+ia = both (default none)")
    g.add_argument("--triplet-margin", default=None, help="triplet margin (default 0.05, TLA MNIST)")
    g.add_argument("--triplet-weight-sa", default=None, help="weight of L_sa (default 0.5)")
    g.add_argument("--triplet-weight-ia", default=None, help="weight of L_ia (default 0.5)")
    g.add_argument("--inv-cache", default=None, help="invariance cache folder (default cache/invariance)")
    g.add_argument("--triplet-norm-weight", default=None, help="feature-norm penalty weight (default 1e-4)")
    g.add_argument("--triplet-distance", default=None, choices=DISTANCES,
                   help="angular distance: 1 - |cos| as in TLA (default abs-cosine), or the signed 1 - cos")
    g.add_argument("--triplet-miner", default=None, choices=MINERS,
                   help="negatives: nearest different-class member of the pool (TLA, default), semi-hard "
                        "(FaceNet: nearest farther than the positive), random")
    g.add_argument("--triplet-pool", default=None, help="negative pool size in batches (default 1)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", default=None, help="epochs over the training data")
    g.add_argument("--steps", default=None, help="optimiser steps (default 500 if no --epochs)")
    g.add_argument("--lr", default=None, help="peak learning rate (default 0.01)")
    g.add_argument("--optimizer", default=None, choices=OPTIMIZERS, help="default sgd (momentum 0.9, nesterov)")
    g.add_argument("--schedule", default=None, choices=SCHEDULES, help="default cosine")
    g.add_argument("--warmup", default=None, help="linear warm-up steps (default 0)")
    g.add_argument("--weight-decay", default=None, help="default 5e-4")
    g.add_argument("--grad-clip", default=None, help="max global gradient norm (default off)")
    g.add_argument("--train-subset", default=None, help="use the first N training images")
    g.add_argument("--holdout", default=None, help="training images held out for the per-epoch "
                   "PGD check (default 500)")
    g.add_argument("--amp", default=None, action=argparse.BooleanOptionalAction,
                   help="bf16 autocast (default: on for CUDA)")
    g.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction,
                   help="channels_last memory format (default: on for CUDA)")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", default=None, help="run folder (default runs/finetune)")
    g.add_argument("--checkpoint-every", default=None, help="steps between checkpoints (default 100)")
    g.add_argument("--resume", action="store_true", default=None, help="continue the run in --out")
    g.add_argument("--eval-after", default=None, help="metrics to evaluate on the result, e.g. clean,autoattack")
    g.add_argument("--n-eval", default=None, help="test examples for --eval-after (default 1000)")
    g.add_argument("--aa-version", default=None, help="AutoAttack version for --eval-after (default standard)")
    g.add_argument("--records", default=None, help="records folder for --eval-after (default ./results)")


def _run_finetune(args: argparse.Namespace) -> int:
    from .config import check_known_keys
    from .config.finetune import FinetuneConfig
    from .workflows.finetune import finetune, make_finetune_run

    options = resolve_options(args)
    check_known_keys(options, _option_names(_add_finetune) | set(FinetuneConfig.__dataclass_fields__),
                     "finetune options")
    config = make_finetune_run(options)
    result = finetune(config, progress=True)
    if result.already_finished:
        print(f"{result.label}: already finished ({result.steps} steps), nothing to do; model at {result.model_path}")
        return 0
    print(f"{result.label}: {result.steps} steps; model at {result.model_path}")
    for record in result.records:
        print(_summary_line(record))
    return 0


# ---------------------------------------------------------------- leaderboard

def _add_leaderboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", default="results", help="records folder")
    p.add_argument("--out", default="leaderboards", help="output folder for CSVs and README.md")
    p.add_argument("--html", default=None, metavar="DIR", help="also write the static HTML site to DIR")
    p.add_argument("--sweep", default=None, help="the sweep file that made the records (the site names its jobs "
                   "in the reproducing commands)")


def _run_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .results.leaderboard import build_leaderboards
    from .results.records import RECORDS_FILE, count_unreadable_lines, read_records
    from .workflows.sweep import sweep_ref
    from .utils.fileio import check_can_create_dir

    if not (Path(args.records) / RECORDS_FILE).is_file():
        raise UserError(f"no records at {Path(args.records) / RECORDS_FILE}")
    for folder in (args.out, args.html):
        if folder:
            check_can_create_dir(folder)
    bad = count_unreadable_lines(args.records)
    if bad and not read_records(args.records):  # an empty board from a damaged file would look like a result
        raise UserError(f"no readable record in {Path(args.records) / RECORDS_FILE} ({bad} unreadable lines)")
    sweep = sweep_ref(args.sweep) if args.sweep else None
    for path in build_leaderboards(args.records, args.out, html_dir=args.html, sweep=sweep):
        print(path)
    return 0


# ---------------------------------------------------------------- export

def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=["robustbench"], help="robustbench: model_info JSON + RobustBench-layout weights")
    p.add_argument("--record", required=True, help="record id (the row it belongs to is exported)")
    p.add_argument("--records", default="results", help="records folder")
    p.add_argument("--out", default="export", help="folder for model_info/ and models/")
    p.add_argument("--name", default=None, help="model name in RobustBench (default <model>_<method>)")
    p.add_argument("--checkpoint", default=None, help="weights file, if not where the record says")
    for flag in ("paper-name", "link", "authors", "venue"):
        p.add_argument(f"--{flag}", default="", help=f"model_info {flag.replace('paper-', '')} (default empty)")
    p.add_argument("--additional-data", action="store_true", help="the model was trained with extra data")


def _run_export(args: argparse.Namespace) -> int:
    from .workflows.export import PaperInfo, export_robustbench

    paper = PaperInfo(args.paper_name, args.link, args.authors, args.venue, args.additional_data)
    for path in export_robustbench(args.records, args.record, args.out, name=args.name, checkpoint=args.checkpoint,
                                   paper=paper):
        print(path)
    return 0


# ---------------------------------------------------------------- plot

def _add_plot(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["robustness-curve", "embeddings"],
                   help="robustness-curve: accuracy against the W_2 / W_inf budget, from records; embeddings: "
                        "2-D PCA of penultimate features of clean, FGSM and invariance examples (MNIST)")
    p.add_argument("--dataset", required=True, help="dataset to plot")
    p.add_argument("--out", required=True, help="output PNG file")
    g = p.add_argument_group("robustness-curve")
    g.add_argument("--records", default="results", help="records folder")
    g.add_argument("--threat-model", default="Linf", help="threat model of the records to plot")
    g = p.add_argument_group("embeddings")
    g.add_argument("--model", default=None, help="model name (architecture and, without --checkpoint, weights)")
    g.add_argument("--source", default=None, choices=["robustbench", "builtin", "timm", "plugin"],
                   help="where the model comes from (inferred from the name if omitted)")
    g.add_argument("--checkpoint", action="append", default=None,
                   help="weights file, one panel each (repeat to compare models; 'none' = the model's own weights)")
    g.add_argument("--title", action="append", default=None, help="panel title, one per --checkpoint")
    g.add_argument("--model-dir", default="models", help="RobustBench-layout model folder")
    g.add_argument("--trust-checkpoint", action="store_true", help="allow .pt checkpoints with pickled code")
    g.add_argument("--n", type=_int("--n"), default=300, help="first N MNIST test images")
    g.add_argument("--eps", default="0.3", help="l_inf radius of the FGSM and invariance examples")
    g.add_argument("--inv-grid", default="full", choices=["full", "fast"], help="invariance transform grid")
    g.add_argument("--inv-cache", default="cache/invariance", help="invariance cache folder")
    g.add_argument("--data-dir", default=None, help="folder with the MNIST .npz files (also $WDRO_DATA_DIR)")


def _run_plot(args: argparse.Namespace) -> int:
    from .config import parse_dataset, parse_threat_model

    dataset = parse_dataset(args.dataset)
    if args.kind == "embeddings":
        path = _plot_embeddings(args, dataset)
    else:
        from .results.plots import robustness_curve

        path = robustness_curve(args.records, dataset.value, parse_threat_model(args.threat_model).value, args.out)
    print(path)
    return 0


def _plot_embeddings(args: argparse.Namespace, dataset) -> Path:
    import torch

    from .config import Dataset, ThreatModel, parse_number
    from .data.datasets import load_split
    from .invariance.generated import generated_set
    from .models import load_model
    from .workflows.embeddings import embedding_panel, embedding_plot

    if dataset is not Dataset.MNIST:
        raise UserError("plot embeddings needs --dataset mnist (invariance examples exist for MNIST only)")
    if not args.model:
        raise UserError("plot embeddings needs --model")
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    eps = parse_number(args.eps, "--eps")
    checkpoints = args.checkpoint or ["none"]
    titles = args.title or [Path(c).parent.name if c != "none" else f"{args.model} (pretrained)"
                            for c in checkpoints]
    if len(titles) != len(checkpoints):
        raise UserError(f"give one --title per --checkpoint ({len(checkpoints)}), got {len(titles)}")
    data = load_split(dataset, "test", args.n, data_dir=args.data_dir)
    inv = generated_set("test", args.n, eps, args.inv_grid, args.inv_cache, args.data_dir)
    x_inv, target = torch.from_numpy(inv.x).unsqueeze(1), torch.from_numpy(inv.target_label)
    panels = []
    for title, checkpoint in zip(titles, checkpoints):
        loaded = load_model(args.model, dataset, ThreatModel.LINF, source=args.source,
                            checkpoint=None if checkpoint == "none" else checkpoint, model_dir=args.model_dir,
                            trust_checkpoint=args.trust_checkpoint)
        panels.append(embedding_panel(title, loaded.module, data.x, data.y, x_inv, target, eps))
    return embedding_plot(panels, args.out, eps)


# ---------------------------------------------------------------- invariance

def _add_invariance(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["generate"], help="generate (and cache) invariance examples")
    p.add_argument("--dataset", default="mnist", help="only mnist is supported")
    p.add_argument("--eps", default="0.3", help="l_inf radius in [0,1] pixel units")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of the source images")
    p.add_argument("--n", default=100, type=_int("--n"), help="first N images of the split")
    p.add_argument("--grid", default="full", choices=["full", "fast"],
                   help="full: 775 transforms (about 10 images/s on one core); fast: 63 transforms")
    p.add_argument("--out", default="cache/invariance", help="cache folder")
    p.add_argument("--data-dir", default=None, help="folder with mnist_train.npz / mnist_test.npz")


def _run_invariance(args: argparse.Namespace) -> int:
    from .config import parse_dataset, parse_number
    from .invariance.cache import CacheKey, cache_path
    from .invariance.generated import generated_set
    from .utils.fileio import check_output_paths
    from .utils.progress import progress_bar

    if parse_dataset(args.dataset).value != "mnist":
        raise UserError("invariance examples exist for MNIST only")
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    eps = parse_number(args.eps, "--eps")
    check_output_paths(folders=[args.out])
    with progress_bar(args.n, "invariance", True, unit="img") as bar:
        inv = generated_set(args.split, args.n, eps, args.grid, args.out, args.data_dir,
                            progress=lambda done, total: bar.update(done - bar.n))
    path = cache_path(args.out, CacheKey("mnist", float(eps), args.split, args.n, args.grid))
    print(f"{len(inv.source_index)} invariance examples (eps {eps:g}, {args.split}, grid {args.grid}) in {path}")
    return 0


# ---------------------------------------------------------------- sweep

def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="sweep YAML file (grid of models x methods x seeds)")
    p.add_argument("--shard", default=None, help="run only shard i of n, e.g. 2/4 (no coordinator needed)")
    p.add_argument("--dry-run", action="store_true", help="print the jobs still to run and stop")
    p.add_argument("--job", action="append", default=None, help="run only this job id (repeatable)")


def _run_sweep(args: argparse.Namespace) -> int:
    from .workflows.sweep import load_sweep, parse_shard, pending_jobs, run_pending_job, shard_jobs

    sweep = load_sweep(args.file, check_device=not args.dry_run)
    shard = parse_shard(args.shard)
    jobs = pending_jobs(sweep, shard, args.job)
    done = len(shard_jobs(sweep, shard, args.job)) - len(jobs)
    if done:
        print(f"{done} jobs already done (records in {sweep.records})", flush=True)
    if args.dry_run:
        for job in jobs:
            print(job.describe())
        print(f"{len(jobs)} jobs to run")
        return 0
    for k, job in enumerate(jobs, 1):
        print(f"[{k}/{len(jobs)}] {job.describe()}", flush=True)
        try:
            record = run_pending_job(job, sweep, progress=True)
        except Interrupted:
            raise Interrupted(f"sweep interrupted in job {job.job_id}, its progress saved; run the same sweep "
                              "command again to continue") from None
        print(_summary_line(record) if record else "  done meanwhile by another process; skipped", flush=True)
    print(f"{len(jobs)} jobs done; records in {sweep.records}")
    return 0


# ---------------------------------------------------------------- demo

def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_output", help="folder for the demo's records and leaderboards")
    p.add_argument("--n-examples", type=_int("--n-examples"), default=500, help="MNIST test examples to evaluate")


def _run_demo(args: argparse.Namespace) -> int:
    from .workflows.demo import run_demo

    run_demo(args.out, n_examples=args.n_examples, progress=True)
    return 0


_COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "models": (_add_models, _run_models, "list model names by source"),
    "evaluate": (_add_evaluate, _run_evaluate, "evaluate a model (clean, AutoAttack, ...) and append a record"),
    "finetune": (_add_finetune, _run_finetune, "fine-tune a model (TRADES, W-DRO TRADES, PGD-AT, FGSM-AT)"),
    "leaderboard": (_add_leaderboard, _run_leaderboard, "rebuild CSV leaderboards (and --html site) from records"),
    "export": (_add_export, _run_export, "export a record's model for RobustBench (model_info JSON + weights)"),
    "invariance": (_add_invariance, _run_invariance, "generate invariance examples (Tramer et al.) for MNIST"),
    "sweep": (_add_sweep, _run_sweep, "run a grid of fine-tunings and evaluations, skipping finished jobs"),
    "plot": (_add_plot, _run_plot, "figures: robustness-curve (from records), embeddings (from models)"),
    "demo": (_add_demo, _run_demo, "offline demo on the bundled MNIST model"),
}

if __name__ == "__main__":
    # `python -m` puts the current folder first on sys.path, where any file (yaml.py, a stray evil.py) would
    # shadow a dependency or be imported as a plugin; import nothing from it, like the console script
    import os

    if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    sys.exit(main())
