"""Command-line interface: parse the flags, make one call of the public API (:mod:`wdro_finetune.api`) per
subcommand and print its result; user errors are one line and exit 2.

Every subcommand that runs a job accepts ``--config FILE`` (YAML or TOML); flags given on the
command line override the file.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
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
    from .evaluate.runner import EvalConfig, evaluate, make_eval_config

    options = resolve_options(args)
    check_known_keys(options, _option_names(_add_evaluate) | set(EvalConfig.__dataclass_fields__), "evaluate options")
    if not options.get("model") or not options.get("dataset"):
        raise UserError("evaluate needs --model and --dataset (on the command line or in --config)")
    config = make_eval_config(options)
    result = evaluate(config, progress=True)
    print(_summary_line(result.record))
    return 0


def _summary_line(record: dict) -> str:
    from .api import summary_line

    return summary_line(record)


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


# ---------------------------------------------------------------- the other commands

def _command(name: str, options: str, show: Callable[[Any], Sequence[object]], groups: str | None = None,
             **extra: Any) -> tuple[Callable, Callable]:
    """(add, run) of a subcommand whose flags are the fields of ``workflows.options.<options>`` and whose run
    is one call of ``api.<name>`` (with ``extra``), printing ``show(result)`` line by line."""
    def add(p: argparse.ArgumentParser) -> None:
        from .workflows import options as declared

        _add_fields(p, getattr(declared, options), getattr(declared, groups) if groups else None)

    def run(args: argparse.Namespace) -> int:
        from . import api

        for line in show(getattr(api, name)(**_flags(args), **extra)):
            print(line)
        return 0

    return add, run


def _model_line(entry: Any) -> str:
    extra = " ".join(x for x in (entry.dataset, entry.threat_model) if x)
    return f"{entry.source}\t{entry.name}" + (f"\t{extra}" if extra else "")


def _add_fields(p: argparse.ArgumentParser, cls: type, groups: dict[str, str] | None = None) -> None:
    """One argument per option field of ``cls`` (:mod:`wdro_finetune.workflows.options`: its default, help and
    choices; a bool a switch, an int the strict integer, a list repeatable; ``groups``: field -> heading from
    that field on)."""
    import dataclasses
    import typing

    from .config.options import option_fields, option_label

    hints, target = typing.get_type_hints(cls), p
    for f in option_fields(cls):
        target = p.add_argument_group(groups[f.name]) if f.name in (groups or {}) else target
        meta, kind = f.metadata, hints[f.name]
        flag = meta["flag"] or option_label(f.name)
        kwargs = {k: v for k, v in (("help", meta["help"]), ("choices", list(meta["choices"] or ())),
                                    ("metavar", meta["metavar"])) if v}
        if flag.startswith("-"):
            kwargs.update({"required": True} if f.default is dataclasses.MISSING else {"default": f.default})
            if kind is bool:
                kwargs["action"] = "store_true"
            elif kind is int:
                kwargs["type"] = _int(flag)
            elif list in map(typing.get_origin, typing.get_args(kind)):
                kwargs["action"] = "append"
        target.add_argument(flag, **kwargs)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The subcommand's options by name (the API function's keyword arguments)."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "verbose", "command")}


def _echo(line: str) -> None:
    print(line, flush=True)


_COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "models": (*_command("models", "ModelsOptions", lambda entries: [*map(_model_line, entries)]),
               "list model names by source"),
    "evaluate": (_add_evaluate, _run_evaluate, "evaluate a model (clean, AutoAttack, ...) and append a record"),
    "finetune": (_add_finetune, _run_finetune, "fine-tune a model (TRADES, W-DRO TRADES, PGD-AT, FGSM-AT)"),
    "leaderboard": (*_command("leaderboard", "LeaderboardOptions", list),
                    "rebuild CSV leaderboards (and --html site) from records"),
    "export": (*_command("export", "ExportOptions", list),
               "export a record's model for RobustBench (model_info JSON + weights)"),
    "invariance": (*_command("invariance", "InvarianceOptions", lambda r: [r.summary()], progress=True),
                   "generate invariance examples (Tramer et al.) for MNIST"),
    "sweep": (*_command("sweep", "SweepOptions", lambda r: [r.summary()], progress=True, report=_echo),
              "run a grid of fine-tunings and evaluations, skipping finished jobs"),
    "plot": (*_command("plot", "PlotOptions", lambda path: [path], "PLOT_GROUPS"),
             "figures: robustness-curve (from records), embeddings (from models)"),
    "demo": (*_command("demo", "DemoOptions", lambda r: r.lines(), progress=True),
             "offline demo on the bundled MNIST model"),
}

if __name__ == "__main__":
    # `python -m` puts the current folder first on sys.path, where any file (yaml.py, a stray evil.py) would
    # shadow a dependency or be imported as a plugin; import nothing from it, like the console script
    import os

    if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    sys.exit(main())
