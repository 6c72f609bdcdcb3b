"""The committed leaderboards are a function of the committed records, and the sweep that made them is done."""

from __future__ import annotations

from pathlib import Path

from wdro_finetune.results.leaderboard import build_leaderboards
from wdro_finetune.results.records import read_records
from wdro_finetune.sweep import load_sweep, pending_jobs

REPO = Path(__file__).resolve().parents[2]
BOARDS = REPO / "leaderboards"


def test_leaderboards_rebuild_byte_for_byte_from_the_committed_records(tmp_path):
    written = build_leaderboards(BOARDS / "records", tmp_path)
    texts = [p for p in written if p.suffix in (".csv", ".md")]
    assert {p.name for p in texts} >= {"mnist_Linf.csv", "README.md"}
    for path in texts:
        assert path.read_bytes() == (BOARDS / path.name).read_bytes(), path.name
    for path in (p for p in written if p.suffix == ".png"):  # the plots the README shows are committed too
        assert (BOARDS / path.name).is_file(), path.name


def test_every_committed_record_comes_from_a_job_of_the_sweep_file():
    jobs = {job.job_id: job for job in load_sweep(BOARDS / "sweep.yaml").jobs}
    records = read_records(BOARDS / "records")
    assert records
    for rec in records:
        job = jobs.get(rec.get("job_id"))
        assert job is not None, rec["record_id"]
        assert (rec["model"], rec["n_examples"]) == (job.model, job.evaluate["n_examples"])


def test_the_committed_sweep_finds_every_job_done():
    assert pending_jobs(load_sweep(BOARDS / "sweep.yaml")) == []
