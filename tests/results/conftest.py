"""Synthetic records in the real format: a committed record line, with the fields a test sets replaced."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from wdro_finetune.results.records import append_record, save_per_example

COMMITTED = Path(__file__).resolve().parents[2] / "leaderboards" / "records" / "records.jsonl"


def _template() -> dict:
    """The first committed record of a fine-tuned model (it has every field, the training config too)."""
    lines = [json.loads(line) for line in COMMITTED.read_text(encoding="utf-8").splitlines() if line.strip()]
    rec = next(r for r in lines if r.get("training"))
    rec["metrics"], rec["labels"] = {}, {}
    return rec


@pytest.fixture
def make_record():
    """make_record(rid, metrics={name: entry}, labels=..., aa='fast'|'standard'|None, **fields) -> record."""
    template = _template()

    def make(rid: str, metrics: dict | None = None, labels: dict | None = None, aa: str | None = "fast",
             **fields) -> dict:
        rec = copy.deepcopy(template)
        rec.update({"record_id": rid, "job_id": None, **fields})
        rec["metrics"] = dict(metrics or {})
        rec["labels"] = dict(labels or {})
        options = {"clean": {}}
        if aa is not None:
            rec["labels"]["aa_version"] = aa
            options["autoattack"] = {"aa_version": aa, "aa_attacks": ["apgd-ce", "apgd-t"] if aa == "fast" else []}
        rec["metric_options"] = options
        return rec

    return make


@pytest.fixture
def write_records(tmp_path):
    """write_records(records, per_example={rid: arrays}) -> records folder."""
    def write(records: list[dict], per_example: dict | None = None) -> Path:
        folder = tmp_path / "records"
        for rec in records:
            append_record(folder, rec)
        for rid, arrays in (per_example or {}).items():
            save_per_example(folder, rid, arrays)
        return folder

    return write
