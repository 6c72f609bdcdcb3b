"""Provenance of a result: package versions, git commit, time; which fine-tune made a checkpoint; paths
as records keep them."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def package_versions() -> dict[str, str]:
    """Versions of python, torch, robustbench, pyautoattack, timm and wdro_finetune."""
    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "robustbench", "pyautoattack", "timm", "wdro-finetune"):
        try:
            out[name.replace("-", "_")] = version(name)
        except PackageNotFoundError:
            out[name.replace("-", "_")] = "not installed"
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the source tree this package runs from (``+dirty`` if modified), or None."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "wdro_finetune"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None


def utc_now() -> str:
    """ISO-8601 UTC timestamp with seconds."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def portable_path(path: str | None) -> str | None:
    """A path as a record may keep it: relative paths as given, absolute ones (a machine's) by file name."""
    if not path:
        return path
    return Path(path).name if Path(path).is_absolute() else str(path)


def public_record(rec: dict) -> dict:
    """A record as readers show it: data file and checkpoint without machine paths (records written
    before that rule keep absolute paths in the file; readers never show them)."""
    return {**rec, "data_file": portable_path(rec.get("data_file")), "checkpoint": portable_path(rec.get("checkpoint"))}


def is_unlabelled(rec: dict) -> bool:
    """A record that says nothing about how its model was made (the evaluator's defaults)."""
    return rec.get("method") in (None, "pretrained") and not rec.get("training")


def relink_records(records: list[dict]) -> list[dict]:
    """Records of unlabelled models whose weights sha256 equals a fine-tune's recorded checkpoint take that
    fine-tune's method and training config (with ``linked_run`` saying from which record)."""
    known = {r["checkpoint_sha256"]: r for r in records if r.get("checkpoint_sha256") and not is_unlabelled(r)}
    out = []
    for rec in records:
        run = known.get(rec.get("checkpoint_sha256")) if is_unlabelled(rec) else None
        out.append(rec if run is None else {**rec, "method": run["method"], "training": run.get("training"),
                                            "linked_run": {"via": "record", "ref": run["record_id"]}})
    return out


def known_run(weights_path: str | None, sha256: str | None, records: list[dict]) -> dict | None:
    """The fine-tune that made the weights with this sha256: {method, training, linked_run} from the run
    folder's ``run.json`` (for ``<out>/model.safetensors`` and the RobustBench-layout copy
    ``<out>/models/<dataset>/<threat_model>/<name>.pt``) or from a record of that checkpoint; None if unknown."""
    if not sha256:
        return None
    for run_json in _run_json_candidates(weights_path):
        run = _read_json(run_json)
        if run and run.get("label") and sha256 in (run.get("model_sha256"), run.get("robustbench_sha256")):
            return {"method": run["label"], "training": run.get("config"),
                    "linked_run": {"via": "run.json", "ref": run_json.parent.name}}
    for rec in reversed(records):
        if rec.get("checkpoint_sha256") == sha256 and not is_unlabelled(rec):
            return {"method": rec["method"], "training": rec.get("training"),
                    "linked_run": {"via": "record", "ref": rec["record_id"]}}
    return None


def _run_json_candidates(weights_path: str | None) -> list[Path]:
    if not weights_path:
        return []
    path = Path(weights_path)
    found = [path.parent / "run.json"]
    if len(path.parents) > 3 and path.parents[2].name == "models":
        found.append(path.parents[3] / "run.json")
    return [p for p in found if p.is_file()]


def _read_json(path: Path) -> dict | None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
