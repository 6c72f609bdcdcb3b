"""Pruning superseded sweep records: only records of jobs no longer in the sweep go, with their per-example
files; hand-run records, unreadable lines and the other lines stay byte for byte."""

import json

import numpy as np

from wdro_finetune.results.records import RECORDS_FILE, append_record, prune_records, read_records, save_per_example


def _rec(rid, job=None):
    rec = {"record_id": rid, "model": "m", "method": "x", "dataset": "mnist", "threat_model": "Linf", "metrics": {}}
    return rec if job is None else {**rec, "job_id": job}


def test_prune_removes_only_superseded_jobs(tmp_path):
    for rec in (_rec("a", "job1"), _rec("b", "old"), _rec("c")):
        append_record(tmp_path, rec)
        save_per_example(tmp_path, rec["record_id"], {"clean": np.ones(3, bool)})
    path = tmp_path / RECORDS_FILE
    with open(path, "ab") as fh:
        fh.write(b"{not json\n")
    before = path.read_bytes().split(b"\n")

    assert [r["record_id"] for r in prune_records(tmp_path, {"job1"}, dry_run=True)] == ["b"]
    assert path.read_bytes().split(b"\n") == before  # dry run: nothing changed

    removed = prune_records(tmp_path, {"job1"})
    assert [r["record_id"] for r in removed] == ["b"]
    assert [r["record_id"] for r in read_records(tmp_path)] == ["a", "c"]
    assert path.read_bytes().split(b"\n") == [line for line in before if b'"old"' not in line]
    assert b"{not json" in path.read_bytes()
    assert not (tmp_path / "per_example" / "b.npz").exists()
    assert (tmp_path / "per_example" / "a.npz").exists() and (tmp_path / "per_example" / "c.npz").exists()
    assert prune_records(tmp_path, {"job1"}) == []  # idempotent
    append_record(tmp_path, _rec("d", "job1"))  # appends still land on their own line
    assert json.loads(path.read_bytes().split(b"\n")[-2])["record_id"] == "d"


def test_sweep_prune_keeps_the_sweeps_jobs(tmp_path):
    """`sweep FILE --prune`: records of job ids the sweep no longer makes go; its own jobs' records stay."""
    from wdro_finetune import api
    from wdro_finetune.workflows.sweep import load_sweep

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("records: records\nmodels: [mnist-smallcnn]\ncommon: {dataset: mnist}\n"
                          "evaluate: {metrics: clean, n_examples: 8}\nmethods:\n  - name: pretrained\n")
    (job,) = load_sweep(sweep_file, check_device=False).jobs
    append_record(tmp_path / "records", _rec("live", job.job_id))
    append_record(tmp_path / "records", _rec("stale", "000000000000"))
    listed = api.sweep(sweep_file, prune=True, dry_run=True)
    assert [r["record_id"] for r in listed.pruned] == ["stale"] and len(read_records(tmp_path / "records")) == 2
    run = api.sweep(sweep_file, prune=True)
    assert run.summary() == "1 superseded records removed"
    assert [r["record_id"] for r in read_records(tmp_path / "records")] == ["live"]
