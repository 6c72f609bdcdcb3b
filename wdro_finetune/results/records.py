"""Result records: one JSON object per line in ``<records>/records.jsonl``, appended under a lock;
per-example flags beside them in ``<records>/per_example/<record_id>.npz``."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import UserError
from ..utils.fileio import append_line_locked, atomic_write_bytes, file_lock

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj`` (sorted keys): the same config, the same id."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def append_record(records_dir: str | Path, record: dict) -> Path:
    """Append one record (a JSON object with a ``record_id``) to ``records.jsonl``."""
    path = Path(records_dir) / RECORDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if append_line_locked(path, json.dumps(record, sort_keys=True, allow_nan=True)):
        log.warning("%s: its last line had no newline; the new record went on a line of its own", path)
    return path


def records_output_paths(records_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """(folders, files) an evaluation writes under ``records_dir``: checked before the work starts."""
    root = Path(records_dir)
    return [root, root / "per_example", root / "partial"], [root / RECORDS_FILE, root / (RECORDS_FILE + ".lock")]


_REPORTED: set[tuple[str, int, str]] = set()  # (file, line number, line digest): each bad line reported once


def read_records(records_dir: str | Path) -> list[dict]:
    """All complete records in file order. A line that is not UTF-8, not JSON or not a record (a crash, a hand
    edit) is skipped, with one warning line naming the file and line number (once per process)."""
    path = Path(records_dir) / RECORDS_FILE
    if not path.is_file():
        return []
    out = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        record, problem = _parse_line(raw)
        if problem is None:
            out.append(record)
        else:
            _report_bad_line(path, number, raw, problem)
    return out


def _parse_line(raw: bytes) -> tuple[dict | None, str | None]:
    """(the record on a non-blank records.jsonl line, None) or (None, what is wrong with the line)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError:
        return None, "not valid JSON"
    return (record, None) if isinstance(record, dict) and "record_id" in record else (None, "not a record")


def _report_bad_line(path: Path, number: int, raw: bytes, problem: str) -> None:
    key = (str(path.resolve()), number, hashlib.sha256(raw).hexdigest())
    if key not in _REPORTED:
        _REPORTED.add(key)
        log.warning("%s:%d is %s; skipped", path, number, problem)


def count_unreadable_lines(records_dir: str | Path) -> int:
    """Non-blank lines of ``records.jsonl`` that :func:`read_records` skips."""
    path = Path(records_dir) / RECORDS_FILE
    lines = [r for r in path.read_bytes().split(b"\n") if r.strip()] if path.is_file() else []
    return len(lines) - len(read_records(records_dir))


def check_record(rec: dict, records_dir: str | Path) -> dict:
    """``rec`` if it has what leaderboards and plots read; UserError naming the record otherwise
    (a hand-edited or foreign line: the records file is corrupt)."""
    where = f"record {rec.get('record_id')!r} in {Path(records_dir) / RECORDS_FILE}"
    for key in ("model", "method", "dataset", "threat_model"):
        if not isinstance(rec.get(key), str):
            raise UserError(f"{where} has no {key}: the records file is corrupt")
    metrics = rec.get("metrics")
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) and "value" in v for v in metrics.values()):
        raise UserError(f"{where} has malformed metrics: the records file is corrupt")
    return rec


def latest_by_id(records: Iterable[dict]) -> list[dict]:
    """One record per ``record_id``: the newest by ``started_at`` (later lines win ties)."""
    best: dict[str, dict] = {}
    for rec in records:
        rid = rec["record_id"]
        if rid not in best or str(rec.get("started_at", "")) >= str(best[rid].get("started_at", "")):
            best[rid] = rec
    return list(best.values())


def save_per_example(records_dir: str | Path, record_id: str, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write per-example arrays (e.g. robustness flags) for a record."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(Path(records_dir) / "per_example" / f"{record_id}.npz", buffer.getvalue())


def load_per_example(records_dir: str | Path, record_id: str) -> dict[str, np.ndarray]:
    """Per-example arrays of a record ({} if none were saved)."""
    path = Path(records_dir) / "per_example" / f"{record_id}.npz"
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def prune_records(records_dir: str | Path, job_ids: set[str], *, dry_run: bool = False) -> list[dict]:
    """Remove the records of sweep jobs not in ``job_ids`` (superseded: their sweep entry changed, so its job
    id did) and their per-example files; records without a ``job_id`` (evaluations run by hand) stay. The
    records file is rewritten atomically under the appenders' lock, its other lines byte for byte (unreadable
    lines too). Returns the removed records (with ``dry_run``: the ones that would be removed)."""
    path = Path(records_dir) / RECORDS_FILE
    if not path.is_file():
        return []
    with file_lock(path.with_name(path.name + ".lock")):
        kept, removed = [], []
        for raw in path.read_bytes().split(b"\n"):
            record = _parse_line(raw)[0] if raw.strip() else None
            stale = record is not None and record.get("job_id") is not None and record["job_id"] not in job_ids
            (removed if stale else kept).append(record if stale else raw)
        if dry_run or not removed:
            return removed
        atomic_write_bytes(path, b"\n".join(kept))
    live = {r.get("record_id") for r in read_records(records_dir)}
    for record in removed:
        if record["record_id"] not in live:
            (Path(records_dir) / "per_example" / f"{record['record_id']}.npz").unlink(missing_ok=True)
    return removed
