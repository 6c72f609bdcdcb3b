"""What a run folder says about its run: the resolved config as a reusable YAML file, the options of
``--resume --out DIR`` taken from ``DIR/run.json``, the resume check, and the paths a run writes.

Resume rule: every option must equal the run's, except ``RESUMABLE_CHANGES`` (``--steps`` / ``--epochs`` may
only grow: a finished run extended; ``--lr`` may change, e.g. lowered after a divergence; output and
evaluation options are not part of the training). A finished run resumed with the same length is a no-op.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..config import to_jsonable
from ..errors import UserError
from .config import RESUMABLE_CHANGES, UNCAPPED, FinetuneConfig

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
    run = read_run(options.get("out") or FinetuneConfig.out)
    if run is None or not isinstance(run.get("config"), dict):
        return options
    return {**config_to_options(run["config"]), **{k: v for k, v in options.items() if v is not None}}


def check_same_run(saved: dict, now: dict, where: Path, checkpoint_step: int) -> None:
    """UserError listing every option that differs from the run in ``where`` (``name: run -> now``), other than
    ``RESUMABLE_CHANGES``; an option the saved run does not name (added since) counts as its default value."""
    defaults = FinetuneConfig.__dataclass_fields__
    diff = []
    for key in sorted(set(saved) | set(now)):
        old = saved.get(key, to_jsonable(defaults[key].default) if key in defaults else None)
        if key not in RESUMABLE_CHANGES and old != now.get(key):
            diff.append(f"{key}: {old!r} -> {now.get(key)!r}")
    if diff:
        raise UserError(f"--resume: options differ from the run in {where} ({'; '.join(diff)}); only --steps / "
                        f"--epochs (longer), --lr and output options may change")
    if now.get("steps") is not None and now["steps"] < checkpoint_step:
        raise UserError(f"--resume: --steps {now['steps']} is below the run's checkpoint at step {checkpoint_step}")


def is_finished(cfg: FinetuneConfig, run: dict | None) -> bool:
    """True when ``run`` (run.json) finished with the length ``cfg`` asks for: resuming it changes nothing."""
    if not run or run.get("status") != "finished" or not isinstance(run.get("config"), dict):
        return False
    saved = run["config"]
    return saved.get("steps") == cfg.steps and saved.get("epochs") == cfg.epochs and \
        (Path(cfg.out) / "model.safetensors").is_file()


def output_paths(cfg: FinetuneConfig) -> tuple[list[Path], list[Path]]:
    """(folders, files) a run writes, checked before it starts: the run folder's, the invariance cache for
    ``--triplet ia`` and the ``--eval-after`` evaluation's."""
    out = Path(cfg.out)
    folders = [out, out / "checkpoints", out / "models"]
    files = [out / RUN_FILE, out / CONFIG_FILE, out / "log.jsonl", out / "log.jsonl.lock", out / "model.safetensors"]
    if "ia" in cfg.triplet.split("+"):
        folders.append(Path(cfg.inv_cache))
    if cfg.eval_after:
        from ..evaluate.runner import make_eval_config, output_paths as eval_paths
        from .config import eval_after_options

        more = eval_paths(make_eval_config(eval_after_options(cfg)))
        folders, files = folders + more[0], files + more[1]
    return folders, files
