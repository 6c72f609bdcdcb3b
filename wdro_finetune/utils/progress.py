"""Progress for long commands: a tqdm bar on a terminal; elsewhere (logs, CI, SLURM) one log line at least every
``WDRO_PROGRESS_SECONDS`` (default 30) seconds on the ``wdro_finetune.progress`` logger, which the CLI shows."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("wdro_finetune.progress")


def interval_seconds() -> float:
    try:
        return max(0.05, float(os.environ.get("WDRO_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0, unit: str = "it", **kwargs: Any):
    """A tqdm bar (terminal), a :class:`LogProgress` (other stderr) or a disabled bar (``enabled`` False)."""
    if enabled and not sys.stderr.isatty():
        return LogProgress(total, desc, initial, unit)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, **kwargs)


class LogProgress:
    """The tqdm methods the package uses (``update``, ``set_postfix``, ``close``, ``n``); a daemon thread logs
    ``desc: n/total unit (percent, rate, postfix)`` every interval until closed."""

    def __init__(self, total: int, desc: str, initial: int = 0, unit: str = "it"):
        self.total, self.desc, self.n, self.unit, self.postfix = total, desc, initial, unit, ""
        self._start, self._first, self._stop = time.monotonic(), initial, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = (self.n - self._first) / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {rate:.3g} {self.unit}/s, " \
               f"{elapsed:.0f} s" + (f", {self.postfix}" if self.postfix else "")

    def _loop(self) -> None:
        while not self._stop.wait(interval_seconds()):
            log.info("%s", self.line())

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
