"""Options saved with a run: the resolved config as a reusable YAML file (``config.yaml``) and the options of
``--resume --out DIR`` taken from ``DIR/run.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from .finetune import UNCAPPED, FinetuneConfig, option_default

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
_NOT_OPTIONS = ("resume",)


def config_to_options(config: dict[str, Any]) -> dict[str, Any]:
    """Options (input of ``make_finetune_config``) that rebuild the config ``config`` (``to_json`` form): None
    values are left out (they mean "the default"), except an uncapped W_2 budget, written ``none``."""
    out = {k: v for k, v in config.items() if v is not None and k not in _NOT_OPTIONS}
    if config.get("threat") == "w2" and config.get("w2_budget_cap") is None:
        out["w2_budget_cap"] = UNCAPPED
    return out


def config_yaml(cfg: FinetuneConfig) -> str:
    """The resolved config as YAML: ``finetune --config <out>/config.yaml --out NEW`` makes the same run."""
    head = "# resolved options of this run: `wdro-finetune finetune --config THIS_FILE --out NEW_FOLDER` repeats it\n"
    return head + yaml.safe_dump(config_to_options(cfg.to_json()), sort_keys=True)


def read_run(out: str | Path) -> dict | None:
    """``<out>/run.json`` as a dict, None if absent; UserError if unreadable."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path} is unreadable; cannot take the run's options from it") from None


def with_saved_options(options: dict[str, Any]) -> dict[str, Any]:
    """For ``--resume``: the run's options from ``<out>/run.json``, overridden by the options given now (so
    ``--resume --out DIR`` alone continues the run as it was started)."""
    run = read_run(options.get("out") or option_default("out"))
    if run is None or not isinstance(run.get("config"), dict):
        return options
    return {**config_to_options(run["config"]), **{k: v for k, v in options.items() if v is not None}}
