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


def resolve_options(args: argparse.Namespace, exclude: tuple[str, ...] = ("func", "verbose", "command"),
                    canonical: Callable[[dict], dict] = dict) -> dict:
    """Options from ``--config`` (keys made ``canonical``: option names) overridden by flags given on the command
    line (non-None)."""
    from .config import load_config_file

    options: dict[str, Any] = canonical(load_config_file(args.config)) if getattr(args, "config", None) else {}
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
    from .evaluate.runner import canonical_options, evaluate, make_eval_config

    options = resolve_options(args, canonical=canonical_options)
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
    """The shared model flags, then one flag group per option group of the fine-tuning config (flags, help,
    defaults and choices from the groups' fields: :mod:`wdro_finetune.config.finetune`; the part names from the
    registries: :data:`wdro_finetune.methods.parts.PART_CHOICES`)."""
    from .config.finetune import option_groups
    from .config.options import add_options
    from .methods.parts import PART_CHOICES

    _add_model_args(p)
    for title, cls in option_groups().items():
        add_options(p.add_argument_group(title, (cls.__doc__ or "").strip().splitlines()[0]), cls,
                    registries=PART_CHOICES)


def _run_finetune(args: argparse.Namespace) -> int:
    from .config import check_known_keys
    from .config.finetune import finetune_fields
    from .workflows.finetune import finetune, make_finetune_run

    options = resolve_options(args)
    check_known_keys(options, _option_names(_add_finetune) | set(finetune_fields()), "finetune options")
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

    from .config.options import field_choices, option_fields, option_flag

    hints, target = typing.get_type_hints(cls), p
    for f in option_fields(cls):
        target = p.add_argument_group(groups[f.name]) if f.name in (groups or {}) else target
        meta, kind = f.metadata, hints[f.name]
        flag = option_flag(f)
        kwargs = {k: v for k, v in (("help", meta["help"]), ("choices", list(field_choices(f))),
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
