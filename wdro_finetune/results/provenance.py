"""Provenance of a result: package versions, git commit, time."""

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
