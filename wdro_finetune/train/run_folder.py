"""What a run folder says about its run: the resume check and the paths a run writes (the options saved
with it: :mod:`wdro_finetune.config.saved_run`).

Resume rule: every option must equal the run's, except ``RESUMABLE_CHANGES`` (``--steps`` / ``--epochs`` may
only grow: a finished run extended; ``--lr`` may change, e.g. lowered after a divergence; output and
evaluation options are not part of the training). A finished run resumed with the same length is a no-op.
"""

from __future__ import annotations

from pathlib import Path

from ..config import to_jsonable
from ..errors import UserError
from ..config.finetune import RESUMABLE_CHANGES, FinetuneConfig, finetune_fields
from ..config.saved_run import CONFIG_FILE, RUN_FILE
from ..methods.parts import REGULARIZERS
from .sensitivity_store import FILE as SENSITIVITY_FILE


def check_same_run(saved: dict, now: dict, where: Path, checkpoint_step: int) -> None:
    """UserError listing every option that differs from the run in ``where`` (``name: run -> now``), other than
    ``RESUMABLE_CHANGES``; an option the saved run does not name (added since) counts as its default value."""
    defaults = finetune_fields()
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
    ``--triplet ia`` and the stored examples of ``--inner-examples precomputed-fgsm`` (the ``--eval-after``
    evaluation's are added by its workflow)."""
    out = Path(cfg.out)
    folders = [out, out / "checkpoints", out / "models"]
    files = [out / RUN_FILE, out / CONFIG_FILE, out / "log.jsonl", out / "log.jsonl.lock", out / "model.safetensors"]
    if REGULARIZERS.get(cfg.triplet).needs_positives():
        folders.append(Path(cfg.inv_cache))
    if cfg.inner_examples != "attack":
        files.append(out / SENSITIVITY_FILE)
    return folders, files
