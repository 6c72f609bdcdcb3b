"""Faults injected for real: SIGKILL and SIGINT sent to real ``python -m wdro_finetune.cli`` processes at chosen
points, concurrent writers of records and leaderboards, a diverging run, pickles that run code, stray modules in
the current folder.

How a precise point is hit without test hooks in the package: the test polls the run folder until the wanted
state is visible (e.g. a checkpoint's temp file exists), freezes the process with SIGSTOP, checks the state again
while the process cannot change it, and only then sends SIGKILL; if the state went by in between, the process is
let go (SIGCONT) and the next opportunity is taken.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wdro_finetune.cli import main
from wdro_finetune.results.leaderboard import build_leaderboards
from wdro_finetune.results.records import RECORDS_FILE, append_record, load_per_example, read_records

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(),
                                reason="needs Linux /proc to see that a process is stopped")

PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
TINY = ["--model", "mnist-smallcnn", "--dataset", "mnist", "--no-pretrained", "--train-subset", "128", "--holdout",
        "32", "--batch-size", "16", "--inner-steps", "1", "--steps", "8", "--checkpoint-every", "2", "--schedule",
        "constant"]
EVAL_AFTER = ["--eval-after", "clean,autoattack", "--aa-version", "fast", "--n-eval", "16"]
CKPT = re.compile(r"step_(\d{8})\.pt")


# ---------------------------------------------------------------- helpers


def cli(*args: str | Path) -> list[str]:
    return [PY, "-m", "wdro_finetune.cli", *map(str, args)]


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (state T) or the process is gone."""
    try:
        states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                  for task in Path(f"/proc/{pid}/task").iterdir()]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return all(s in "TtZX" for s in states)


def freeze_when(proc: subprocess.Popen, condition, timeout: float = 240) -> bool:
    """Poll until ``condition()`` holds, SIGSTOP the process and check ``condition()`` again while it is frozen.
    True: frozen in that state. False: the process exited first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the wanted state never came"
        if condition():
            os.kill(proc.pid, signal.SIGSTOP)
            while not _stopped(proc.pid):
                time.sleep(0.0005)
            if proc.poll() is None and condition():
                return True
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.001)
    return False


def kill(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL; works on a stopped process
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def latest_step(folder: Path) -> int | None:
    try:
        match = CKPT.fullmatch((folder / "latest").read_text().strip())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def step_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("step_*.pt")) if folder.is_dir() else []


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp")) if folder.is_dir() else []


def assert_checkpoints_whole(folder: Path) -> None:
    """Every checkpoint file loads completely with weights_only=True (none truncated, none with code)."""
    for path in step_files(folder):
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["step"] == int(CKPT.fullmatch(path.name).group(1))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ from the uninterrupted run"
    assert a.read_bytes() == b.read_bytes()


def finish_with_resume(out: Path, tmp_path: Path, extra: list[str] = ()) -> subprocess.CompletedProcess:
    done = run(cli("finetune", *TINY, *extra, "--out", out, "--resume"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted tiny run (with an evaluation after it), in its own process."""
    root = tmp_path_factory.mktemp("reference")
    done = run(cli("finetune", *TINY, *EVAL_AFTER, "--out", root / "run", "--records", root / "rec"), root)
    assert done.returncode == 0, done.stderr[-3000:]
    [record] = read_records(root / "rec")
    return {"weights": root / "run" / "model.safetensors", "record": record,
            "flags": load_per_example(root / "rec", record["record_id"])}


# ---------------------------------------------------------------- fine-tuning killed with SIGKILL


def test_sigkill_mid_step_then_resume_gives_the_uninterrupted_weights(tmp_path, reference):
    out, ck = tmp_path / "run", tmp_path / "run" / "checkpoints"

    def between_checkpoints() -> bool:  # a checkpoint fully written and none being written: inside steps
        step = latest_step(ck)
        files = step_files(ck)
        return step in (2, 4, 6) and not temp_files(ck) and files[-1].name == f"step_{step:08d}.pt" and len(files) <= 2

    proc = spawn(cli("finetune", *TINY, "--out", out), tmp_path)
    assert freeze_when(proc, between_checkpoints), proc.communicate()[1][-3000:]
    step = latest_step(ck)
    kill(proc)
    assert latest_step(ck) == step and not (out / "model.safetensors").exists()
    assert_checkpoints_whole(ck)
    finish_with_resume(out, tmp_path)
    assert_same_weights(out / "model.safetensors", reference["weights"])
    assert_checkpoints_whole(ck)


def test_sigkill_mid_checkpoint_write_leaves_no_truncated_checkpoint(tmp_path, reference):
    out, ck = tmp_path / "run", tmp_path / "run" / "checkpoints"

    def writing_a_later_checkpoint() -> bool:  # temp file of step >= 4 exists: between mkstemp and rename
        return any(int(p.name[6:14]) >= 4 for p in temp_files(ck) if p.name.startswith(".step_"))

    for _attempt in range(4):  # the write lasts milliseconds: 3 chances per run, a few runs
        proc = spawn(cli("finetune", *TINY, "--out", out), tmp_path)
        if freeze_when(proc, writing_a_later_checkpoint):
            break
        assert proc.returncode == 0, proc.communicate()[1][-3000:]
        shutil.rmtree(out)
    else:
        pytest.fail("never caught a checkpoint write in progress")
    [temp] = [p for p in temp_files(ck) if p.name.startswith(".step_")]
    target = int(temp.name[6:14])
    kill(proc)
    assert temp.exists() and not (ck / f"step_{target:08d}.pt").exists(), "the killed write never became a checkpoint"
    assert latest_step(ck) == target - 2
    assert_checkpoints_whole(ck)  # the temp file is never taken for a checkpoint
    finish_with_resume(out, tmp_path)
    assert_same_weights(out / "model.safetensors", reference["weights"])
    assert not temp.exists(), "the stale temp file of the killed write is cleaned up"
    assert_checkpoints_whole(ck)


def test_sigkill_mid_evaluation_then_resume_gives_the_same_weights_and_record(tmp_path, reference):
    out, rec = tmp_path / "run", tmp_path / "rec"

    def evaluating() -> bool:  # training finished (run.json says the evaluation runs) and no record yet
        try:
            status = json.loads((out / "run.json").read_text())["status"]
        except (OSError, ValueError, KeyError):
            return False
        return status == "evaluating" and not (rec / RECORDS_FILE).exists()

    proc = spawn(cli("finetune", *TINY, *EVAL_AFTER, "--out", out, "--records", rec), tmp_path)
    assert freeze_when(proc, evaluating), proc.communicate()[1][-3000:]
    kill(proc)
    assert not (rec / RECORDS_FILE).exists()
    finish_with_resume(out, tmp_path, [*EVAL_AFTER, "--records", str(rec)])
    assert_same_weights(out / "model.safetensors", reference["weights"])
    [record] = read_records(rec)
    assert record["record_id"] == reference["record"]["record_id"]
    assert record["metrics"] == reference["record"]["metrics"]
    flags = load_per_example(rec, record["record_id"])
    assert flags.keys() == reference["flags"].keys()
    assert all(np.array_equal(flags[k], reference["flags"][k]) for k in flags)
    assert_checkpoints_whole(out / "checkpoints")
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


# ---------------------------------------------------------------- Ctrl-C


def test_sigint_finishes_the_step_writes_a_checkpoint_and_exits_130(tmp_path, reference):
    out, ck = tmp_path / "run", tmp_path / "run" / "checkpoints"
    proc = spawn(cli("finetune", *TINY, "--out", out), tmp_path)
    assert freeze_when(proc, lambda: latest_step(ck) == 2)
    os.kill(proc.pid, signal.SIGINT)  # delivered when the process runs again
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    match = re.search(r"interrupted at step (\d+);.*--resume", last)
    assert match, last
    step = int(match.group(1))
    assert 2 <= step < 8, "the interrupt stops the run early, after finishing the step in progress"
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "interrupted" and run_json["step"] == step
    assert latest_step(ck) == step and (ck / f"step_{step:08d}.pt").is_file()
    assert not (out / "model.safetensors").exists()
    assert_checkpoints_whole(ck)
    finish_with_resume(out, tmp_path)
    assert_same_weights(out / "model.safetensors", reference["weights"])


# ---------------------------------------------------------------- non-finite loss


def test_non_finite_loss_stops_with_one_line_keeps_the_good_checkpoint_and_resume_works(tmp_path, reference, capsys):
    out, ck = tmp_path / "run", tmp_path / "run" / "checkpoints"
    base = [a for a in TINY if a not in ("--steps", "8")] + ["--optimizer", "sgd", "--out", str(out)]
    assert main(["finetune", *base, "--steps", "2"]) == 0
    good = {p.name: p.read_bytes() for p in step_files(ck)}
    assert list(good) == ["step_00000002.pt"]
    capsys.readouterr()
    # lr 1e30: the update after step 2 gives weights ~1e30, whose logits overflow at step 3 (loss inf / nan);
    # with --checkpoint-every 1 a checkpoint of step 3 (those weights) is written before the loss is seen
    rc = main(["finetune", *base, "--steps", "8", "--resume", "--lr", "1e30", "--checkpoint-every", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "non-finite loss at step 3" in err and "step_00000002.pt" in err and "--resume" in err
    assert {p.name: p.read_bytes() for p in step_files(ck)} == good, "the last good checkpoint is intact"
    assert latest_step(ck) == 2 and not (ck / "step_00000003.pt").exists()
    # lower --lr (back to the original 0.01) and resume: the uninterrupted run's weights
    assert main(["finetune", *base, "--steps", "8", "--resume", "--lr", "0.01"]) == 0
    assert_same_weights(out / "model.safetensors", reference["weights"])


def test_non_finite_loss_before_any_checkpoint_says_to_start_again(tmp_path, capsys):
    out = tmp_path / "run"
    base = [a for a in TINY if a not in ("--steps", "8")] + ["--out", str(out), "--steps", "3"]
    assert main(["finetune", *base, "--lr", "1e30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite loss at step 1" in err and "start again" in err, err
    assert main(["finetune", *base, "--lr", "0.01"]) == 0  # starting again in the same folder works


# ---------------------------------------------------------------- evaluation killed, then rerun


def _partial(rec: Path, name: str) -> list[Path]:
    return sorted((rec / "partial").glob(f"*/{name}")) if (rec / "partial").is_dir() else []


def test_evaluation_killed_during_autoattack_reruns_only_unfinished_chunks(tmp_path, smallcnn_checkpoint,
                                                                          monkeypatch, capsys):
    from wdro_finetune.config import Dataset
    from wdro_finetune.data.datasets import load_split
    from wdro_finetune.evaluate import autoattack

    n, chunk = 32, 8
    args = ["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--checkpoint", str(smallcnn_checkpoint),
            "--metrics", "autoattack", "--aa-version", "custom", "--aa-attacks", "apgd-ce", "--eps", "0.15",
            "--n-examples", str(n), "--batch-size", str(chunk)]

    def some_chunks_done() -> bool:
        for path in _partial(tmp_path / "rec", "autoattack.npz"):
            try:
                with np.load(path) as state:
                    return 1 <= state["done"].sum() < n // chunk
            except (OSError, ValueError, KeyError):
                return False
        return False

    proc = spawn(cli(*args, "--records", tmp_path / "rec"), tmp_path)
    assert freeze_when(proc, some_chunks_done), proc.communicate()[1][-3000:]
    kill(proc)
    [state_file] = _partial(tmp_path / "rec", "autoattack.npz")
    with np.load(state_file) as state:
        done = state["done"].copy()
    assert not (tmp_path / "rec" / RECORDS_FILE).exists()

    # the uninterrupted run, for comparison
    assert main([*args, "--records", str(tmp_path / "ref")]) == 0
    [ref] = read_records(tmp_path / "ref")

    x = load_split(Dataset.MNIST, "test", n).x
    attacked = []
    real = autoattack.autoattack_flags

    def spy(model, xs, ys, **kw):
        attacked.extend(i for i in range(n // chunk) if torch.equal(xs, x[i * chunk:(i + 1) * chunk]))
        return real(model, xs, ys, **kw)

    monkeypatch.setattr(autoattack, "autoattack_flags", spy)
    assert main([*args, "--records", str(tmp_path / "rec")]) == 0, capsys.readouterr().err
    assert sorted(attacked) == list(np.flatnonzero(~done)), f"done before the rerun: {done}"
    [record] = read_records(tmp_path / "rec")
    assert record["record_id"] == ref["record_id"] and record["metrics"] == ref["metrics"]
    np.testing.assert_array_equal(load_per_example(tmp_path / "rec", record["record_id"])["autoattack"],
                                  load_per_example(tmp_path / "ref", ref["record_id"])["autoattack"])
    assert not (tmp_path / "rec" / "partial" / record["record_id"]).exists()


def test_evaluation_killed_during_wpgd_reruns_only_unfinished_budgets(tmp_path, monkeypatch, capsys):
    from wdro_finetune.evaluate import wdro

    deltas = {"1/20": 0.05, "1/10": 0.1, "1/5": 0.2}
    args = ["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--metrics", "wdro", "--delta",
            "0.05,0.1,0.2", "--wdro-steps", "20", "--n-examples", "64", "--batch-size", "64"]
    proc = spawn(cli(*args, "--records", tmp_path / "rec"), tmp_path)
    assert freeze_when(proc, lambda: 1 <= len(_partial(tmp_path / "rec", "wdro_w2_*.json")) < 3), \
        proc.communicate()[1][-3000:]
    kill(proc)
    finished = {p.name for p in _partial(tmp_path / "rec", "wdro_w2_*.json")}
    unfinished = {d for label, d in deltas.items() if f"wdro_w2_{label.replace('/', '_')}.json" not in finished}
    assert 0 < len(unfinished) < 3

    assert main([*args, "--records", str(tmp_path / "ref")]) == 0
    [ref] = read_records(tmp_path / "ref")

    attacked = []
    real = wdro.WPGD.run

    def spy(self, model, x, y, **kw):
        attacked.append(self.options.delta)
        return real(self, model, x, y, **kw)

    monkeypatch.setattr(wdro.WPGD, "run", spy)
    assert main([*args, "--records", str(tmp_path / "rec")]) == 0, capsys.readouterr().err
    assert set(attacked) == unfinished, f"finished before the rerun: {sorted(finished)}"
    [record] = read_records(tmp_path / "rec")
    assert record["record_id"] == ref["record_id"] and record["metrics"] == ref["metrics"]
    mine, theirs = load_per_example(tmp_path / "rec", record["record_id"]), load_per_example(tmp_path / "ref",
                                                                                             ref["record_id"])
    assert mine.keys() == theirs.keys() and all(np.array_equal(mine[k], theirs[k]) for k in mine)


# ---------------------------------------------------------------- concurrent writers

PER_WRITER = 12


def _writer(records: str, boards: str, worker: int) -> None:
    for i in range(PER_WRITER):
        rid = f"w{worker}-{i:03d}"
        append_record(records, {
            "record_id": rid, "model": f"model-{worker}", "method": "pretrained", "source": "builtin",
            "dataset": ("mnist", "cifar10")[i % 2], "threat_model": "Linf", "eps": 0.3, "n_examples": 100,
            "seed": i, "data_file": "x.npz", "started_at": f"2024-01-01T00:00:{i:02d}+00:00",
            "metrics": {"clean_acc": {"value": 90.0 + worker, "n": 100, "lo": 80.0, "hi": 95.0},
                        "autoattack_acc": {"value": float(i), "n": 100, "lo": 0.0, "hi": 50.0}},
            "labels": {"aa_version": "fast"}, "note": chr(ord("a") + worker) * 8000})
        build_leaderboards(records, boards)


def _reader(boards: str, stop, result) -> None:
    """Parse every CSV it can find until told to stop; count complete reads and report any incomplete one."""
    reads, problems = 0, []
    while not stop.is_set() or reads == 0:
        for path in sorted(Path(boards).glob("*.csv")):
            text = path.read_text(encoding="utf-8")
            rows = list(csv.reader(io.StringIO(text)))
            if not text.endswith("\n") or not rows or rows[0][:3] != ["rank", "model", "method"] or \
                    rows[0][-1] != "record_id" or any(len(r) != len(rows[0]) for r in rows[1:]):
                problems.append(f"{path.name}: {text[-200:]!r}")
            reads += 1
    result.put((reads, problems))


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_appends_and_leaderboard_rebuilds_lose_nothing(tmp_path, writers):
    ctx = multiprocessing.get_context("fork")
    records, boards = tmp_path / "records", tmp_path / "boards"
    stop, result = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(boards), stop, result))
    reader.start()
    procs = [ctx.Process(target=_writer, args=(str(records), str(boards), w)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    stop.set()
    reads, problems = result.get(timeout=120)
    reader.join(timeout=60)
    assert problems == [] and reads > 0

    lines = (records / RECORDS_FILE).read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == writers * PER_WRITER
    ids = [json.loads(line)["record_id"] for line in lines[:-1]]  # every line is whole JSON
    expected = {f"w{w}-{i:03d}" for w in range(writers) for i in range(PER_WRITER)}
    assert sorted(ids) == sorted(expected), "no record lost or duplicated"
    # the leaderboards as the last writer left them (no extra rebuild) hold every record exactly once
    shown = [row["record_id"] for path in boards.glob("*.csv")
             for row in csv.DictReader(io.StringIO(path.read_text()))]
    assert sorted(shown) == sorted(expected)
    assert not list(boards.glob(".*.tmp")) and not list(records.glob(".*.tmp"))
    assert not list(boards.glob(".publish-*")), "no staging folder left"


def _board_record(rid: str, model: str) -> dict:
    return {"record_id": rid, "model": model, "method": "pretrained", "dataset": "mnist", "threat_model": "Linf",
            "eps": 0.3, "n_examples": 10, "metrics": {"clean_acc": {"value": 50.0, "n": 10}}}


REBUILD_UNTIL_STOPPED = """import sys, pathlib
from wdro_finetune.results.leaderboard import build_leaderboards
records, boards, stop = sys.argv[1:]
while not pathlib.Path(stop).exists():
    build_leaderboards(records, boards)
"""


def test_a_rebuild_that_read_older_records_never_overwrites_a_newer_leaderboard(tmp_path):
    """Rebuilder A has read the records and is writing when it is frozen; meanwhile a record is appended and B
    rebuilds. After both, the leaderboard must hold the new record (A's older view must not land last)."""
    import threading

    records, boards, stop = tmp_path / "records", tmp_path / "boards", tmp_path / "STOP"
    append_record(records, _board_record("r0", "old-model"))
    proc = spawn([PY, "-c", REBUILD_UNTIL_STOPPED, str(records), str(boards), str(stop)], tmp_path)
    staged = lambda: any(boards.glob(".publish-*/*"))  # noqa: E731  (A is writing its set of files)
    assert freeze_when(proc, staged), proc.communicate()[1][-3000:]
    stop.touch()  # A stops after the rebuild it is in
    append_record(records, _board_record("r1", "new-model"))
    rebuild_b = threading.Thread(target=build_leaderboards, args=(records, boards))
    rebuild_b.start()
    rebuild_b.join(timeout=2)  # finishes at once without a lock; waits for A with one
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    rebuild_b.join(timeout=60)
    assert not rebuild_b.is_alive()
    rows = list(csv.DictReader(io.StringIO((boards / "mnist_Linf.csv").read_text())))
    assert sorted(r["record_id"] for r in rows) == ["r0", "r1"]
    assert "new-model" in (boards / "README.md").read_text()


# ---------------------------------------------------------------- checkpoints that would run code


class _RunsCode:
    """Unpickling this runs a shell command (creates a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(path: Path, marker: Path, state: dict) -> Path:
    buffer = io.BytesIO()
    torch.save({**state, "evil": _RunsCode(marker)}, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_checkpoint_that_runs_code_is_refused_by_evaluate_and_finetune_unless_trusted(tmp_path, capsys,
                                                                                        trained_smallcnn):
    marker = tmp_path / "MARKER"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker, {"state_dict": trained_smallcnn.state_dict()})
    (tmp_path / "rec").mkdir()
    append_record(tmp_path / "rec", {"record_id": "old", "model": "x"})
    before = _snapshot(tmp_path / "rec")
    common = ["--model", "mnist-smallcnn", "--dataset", "mnist", "--checkpoint", str(evil)]
    for args in (["evaluate", *common, "--metrics", "clean", "--n-examples", "4", "--records", str(tmp_path / "rec")],
                 ["finetune", *common, "--steps", "1", "--train-subset", "16", "--holdout", "0", "--batch-size", "8",
                  "--out", str(tmp_path / "run")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "could run code" in err and "--trust-checkpoint" in err and "evil.pt" in err
        assert not marker.exists(), "refusing must not run the pickled code"
    assert _snapshot(tmp_path / "rec") == before
    assert not (tmp_path / "run").exists(), "a refused finetune creates no run folder"
    # the user vouches for the file: it loads (and its code runs)
    assert main(["evaluate", *common, "--trust-checkpoint", "--metrics", "clean", "--n-examples", "4", "--records",
                 str(tmp_path / "rec")]) == 0
    assert marker.exists()


def test_resume_refuses_a_planted_checkpoint_that_runs_code(tmp_path, capsys):
    out, ck = tmp_path / "run", tmp_path / "run" / "checkpoints"
    base = [a for a in TINY if a not in ("--steps", "8")] + ["--out", str(out)]
    assert main(["finetune", *base, "--steps", "2"]) == 0
    real = torch.load(ck / "step_00000002.pt", weights_only=True)
    marker = tmp_path / "MARKER"
    _evil_checkpoint(ck / "step_00000002.pt", marker, real)
    capsys.readouterr()
    assert main(["finetune", *base, "--steps", "4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "could run code" in err.splitlines()[-1] and "Traceback" not in err
    assert not marker.exists()


def test_everything_the_project_writes_loads_without_pickle_code(reference):
    run_dir = reference["weights"].parent
    assert reference["weights"].suffix == ".safetensors"
    for path in run_dir.rglob("*.pt"):  # training checkpoints and the RobustBench-layout copy
        torch.load(path, map_location="cpu", weights_only=True)
    assert len(list(run_dir.rglob("*.pt"))) == 3


# ---------------------------------------------------------------- plugins and the current folder

EVIL = """import pathlib
pathlib.Path(__file__).with_name("IMPORTED_" + __name__).touch()

def build(num_classes=10):
    from wdro_finetune.models.builtin import SmallCNN
    return SmallCNN(num_classes=num_classes)
"""


def _save_smallcnn(path: Path) -> Path:
    from wdro_finetune.models.builtin import SmallCNN
    from wdro_finetune.models.checkpoint import save_safetensors

    return save_safetensors(SmallCNN(), path)


def test_nothing_is_imported_from_the_current_folder_and_plugins_run_only_when_named(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in ("evil", "yaml", "timm", "safetensors"):  # a stray plugin, and modules that would shadow dependencies
        (cwd / f"{name}.py").write_text(EVIL)
    script = Path(PY).with_name("wdro-finetune")
    if not script.is_file():
        pytest.skip("console script wdro-finetune not installed next to the interpreter")
    console = [str(script)]
    rec = str(tmp_path / "rec")
    jobs = {
        "console-models": console + ["models"],
        "module-models": cli("models", "--source", "builtin"),
        "module-unknown-name": cli("evaluate", "--model", "evil", "--dataset", "mnist", "--records", rec),
        "console-named-not-in-this-folder": console + ["evaluate", "--model", "evil2:build", "--dataset", "mnist",
                                                       "--metrics", "clean", "--n-examples", "4", "--records", rec],
    }
    procs = {k: spawn(v, cwd) for k, v in jobs.items()}
    results = {k: (p.communicate(timeout=300), p.returncode) for k, p in procs.items()}
    assert results["console-models"][1] == 0 and "builtin\tmnist-smallcnn" in results["console-models"][0][0]
    assert results["module-models"][1] == 0, results["module-models"][0][1][-2000:]
    for key, expected in (("module-unknown-name", "'evil'"), ("console-named-not-in-this-folder", "cannot import")):
        (out, err), rc = results[key]
        assert rc == 2 and err.count("\n") == 1 and expected in err and "Traceback" not in err, err
    assert not list(cwd.glob("IMPORTED_*")), "nothing was imported from the current folder"
    # named explicitly, found in the current folder as `python -m` would: that module runs, no other
    weights = _save_smallcnn(tmp_path / "w.safetensors")
    here = run(console + ["evaluate", "--model", "evil:build", "--dataset", "mnist", "--metrics", "clean",
                          "--n-examples", "4", "--checkpoint", str(weights), "--records", rec], cwd)
    assert here.returncode == 0, here.stderr[-2000:]
    assert [p.name for p in cwd.glob("IMPORTED_*")] == ["IMPORTED_evil"]
    # named explicitly, from a folder put on the path on purpose: the plugin runs
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "evil.py").write_text(EVIL)
    named = run(cli("evaluate", "--model", "evil:build", "--dataset", "mnist", "--metrics", "clean", "--n-examples",
                    "4", "--records", rec), tmp_path, env={**ENV, "PYTHONPATH": str(plugins)})
    assert named.returncode == 0, named.stderr[-2000:]
    assert (plugins / "IMPORTED_evil").exists()


def test_an_entry_point_plugin_is_listed_without_import_and_runs_when_used(tmp_path, monkeypatch, capsys):
    from wdro_finetune.config import Dataset, ThreatModel
    from wdro_finetune.models import load_model

    site = tmp_path / "site"
    (site / "wdro_ep_demo-1.0.dist-info").mkdir(parents=True)
    (site / "wdro_ep_demo-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: wdro-ep-demo\n"
                                                                   "Version: 1.0\n")
    (site / "wdro_ep_demo-1.0.dist-info" / "entry_points.txt").write_text(
        "[wdro_finetune.models]\nep-smallcnn = wdro_ep_demo_module:build\n")
    (site / "wdro_ep_demo_module.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(site))
    assert main(["models", "--source", "plugin"]) == 0
    assert "plugin\tep-smallcnn" in capsys.readouterr().out.splitlines()
    assert not list(site.glob("IMPORTED_*")), "listing plugins imports none"
    loaded = load_model("ep-smallcnn", Dataset.MNIST, ThreatModel.LINF)
    assert loaded.source == "plugin" and (site / "IMPORTED_wdro_ep_demo_module").exists()
    assert loaded.module(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    sys.modules.pop("wdro_ep_demo_module", None)


def test_sigint_stops_a_sweep_cleanly_and_the_same_command_continues_it(tmp_path):
    (tmp_path / "sweep.yaml").write_text(
        "records: rec\nruns: runs\nmodels: [mnist-smallcnn]\n"
        "common: {dataset: mnist}\nevaluate: {metrics: clean, n_examples: 16}\n"
        "methods:\n  - name: trades\n    finetune: {pretrained: false, train_subset: 128, holdout: 16,"
        " batch_size: 16, steps: 8, inner_steps: 2, checkpoint_every: 1, schedule: constant}\n")
    proc = spawn(cli("sweep", "sweep.yaml"), tmp_path)
    assert freeze_when(proc, lambda: any(latest_step(ck) == 2 for ck in (tmp_path / "runs").glob("*/checkpoints")))
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "sweep interrupted" in err.strip().splitlines()[-1] and not (tmp_path / "rec" / RECORDS_FILE).exists()
    done = run(cli("sweep", "sweep.yaml"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_records(tmp_path / "rec")) == 1
