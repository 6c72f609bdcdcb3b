"""The committed leaderboards are a function of the committed records, and the sweep that made them is done."""

from __future__ import annotations

from pathlib import Path

from wdro_finetune.results.leaderboard import build_leaderboards
from wdro_finetune.results.records import read_records
from wdro_finetune.workflows.sweep import load_sweep, pending_jobs, sweep_ref

REPO = Path(__file__).resolve().parents[2]
BOARDS = REPO / "leaderboards"


def test_leaderboards_and_site_rebuild_byte_for_byte_from_the_committed_records(tmp_path, monkeypatch):
    # what the README's command does: leaderboard --records leaderboards/records --out leaderboards
    #   --html leaderboards/site --sweep leaderboards/sweep.yaml
    monkeypatch.chdir(REPO)
    written = build_leaderboards(BOARDS / "records", tmp_path, html_dir=tmp_path / "site",
                                 sweep=sweep_ref("leaderboards/sweep.yaml"))
    texts = [p for p in written if p.suffix in (".csv", ".md", ".html", ".css", ".js")]
    names = {p.relative_to(tmp_path).as_posix() for p in texts}
    assert names >= {"mnist_Linf.csv", "README.md", "site/index.html", "site/site.js"}
    for path in texts:
        name = path.relative_to(tmp_path)
        assert path.read_bytes() == (BOARDS / name).read_bytes(), name
    committed_site = {p.relative_to(BOARDS).as_posix() for p in (BOARDS / "site").rglob("*") if p.is_file()}
    built_site = {p.relative_to(tmp_path).as_posix() for p in written if p.relative_to(tmp_path).parts[0] == "site"}
    assert committed_site == built_site  # no stale page left behind
    for path in (p for p in written if p.suffix == ".png"):  # the plots the README shows are committed too
        assert (BOARDS / path.relative_to(tmp_path)).is_file(), path.name


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
