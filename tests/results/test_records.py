"""Records: JSON lines appended under a lock; concurrent writers lose and corrupt nothing."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np

from wdro_finetune.results.records import (
    RECORDS_FILE,
    append_record,
    latest_by_id,
    load_per_example,
    read_records,
    save_per_example,
    stable_hash,
)

PROCESSES = 4
PER_PROCESS = 40
PAYLOAD = 20_000  # characters per line: far above PIPE_BUF (4096), so unlocked appends could interleave


def _append_many(records_dir: str, worker: int) -> None:
    for i in range(PER_PROCESS):
        append_record(records_dir, {"record_id": f"w{worker}-{i}", "worker": worker, "i": i,
                                    "payload": chr(ord("a") + worker) * PAYLOAD})


def test_concurrent_appends_from_four_processes_lose_and_corrupt_no_line(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    lines = (tmp_path / RECORDS_FILE).read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == PROCESSES * PER_PROCESS + 1
    seen = set()
    for line in lines[:-1]:
        rec = json.loads(line)  # raises if two writes interleaved
        assert rec["payload"] == chr(ord("a") + rec["worker"]) * PAYLOAD
        seen.add(rec["record_id"])
    assert seen == {f"w{w}-{i}" for w in range(PROCESSES) for i in range(PER_PROCESS)}
    assert len(read_records(tmp_path)) == PROCESSES * PER_PROCESS


def test_append_keeps_existing_lines_byte_for_byte(tmp_path):
    append_record(tmp_path, {"record_id": "a", "x": 1.5})
    before = (tmp_path / RECORDS_FILE).read_bytes()
    append_record(tmp_path, {"record_id": "b", "x": 2})
    after = (tmp_path / RECORDS_FILE).read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 2


def test_read_records_skips_a_torn_last_line(tmp_path):
    append_record(tmp_path, {"record_id": "a"})
    with open(tmp_path / RECORDS_FILE, "a") as fh:
        fh.write('{"record_id": "b", "trunc')  # a crash mid-write
    assert [r["record_id"] for r in read_records(tmp_path)] == ["a"]


def test_stable_hash_ignores_key_order_and_sees_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert len(stable_hash({"a": 1})) == 16


def test_latest_by_id_keeps_the_newest_record():
    recs = [{"record_id": "x", "started_at": "2024-01-02T00:00:00+00:00", "v": "new"},
            {"record_id": "x", "started_at": "2024-01-01T00:00:00+00:00", "v": "old"},
            {"record_id": "y", "started_at": "2024-01-01T00:00:00+00:00", "v": "only"}]
    assert {r["record_id"]: r["v"] for r in latest_by_id(recs)} == {"x": "new", "y": "only"}


def test_per_example_arrays_round_trip(tmp_path):
    flags = np.array([True, False, True])
    save_per_example(tmp_path, "rid", {"clean": flags, "autoattack": flags & False})
    arrays = load_per_example(tmp_path, "rid")
    np.testing.assert_array_equal(arrays["clean"], flags)
    assert not arrays["autoattack"].any()
    assert load_per_example(tmp_path, "missing") == {}
