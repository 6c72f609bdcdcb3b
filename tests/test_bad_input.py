"""Bad input across every subcommand: exactly one line on stderr, exit code 2, no traceback, and no file in the
working folder created, changed or removed (records, runs, leaderboards, plots, sweep outputs).

Complements tests/test_cli.py, whose table covers ``evaluate`` (names, eps, checkpoints, config files); the cases
here are the other subcommands and the ``evaluate`` inputs that table lacks. Each case runs in a fresh copy of a
working folder (an existing record, a finished run, corrupt data files, config and sweep files) with that folder
as the current directory, so default output paths are watched too.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wdro_finetune.cli import main
from wdro_finetune.results.records import append_record

PREFIX = "wdro-finetune: error:"
FT = ["finetune", "--model", "mnist-smallcnn", "--dataset", "mnist", "--no-pretrained", "--train-subset", "32",
      "--holdout", "0", "--batch-size", "8", "--steps", "1", "--inner-steps", "1", "--schedule", "constant"]
FT_CIFAR = ["finetune", "--model", "cifar10-resnet-small", "--dataset", "cifar10", "--no-pretrained"]
EV = ["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--n-examples", "4", "--records", "records"]
WDRO = EV + ["--metrics", "wdro", "--wdro-steps", "1"]
PLOT = ["plot", "robustness-curve", "--records", "records", "--dataset", "mnist"]
SWEEP_OK = """records: sweep_records
runs: sweep_runs
models: [mnist-smallcnn]
common: {dataset: mnist}
evaluate: {metrics: clean, n_examples: 4}
methods:
  - name: pretrained
"""

# (id, argv, text the one line must contain)
CASES = [
    # ---- top level
    ("no-such-subcommand", ["evaluat", "--model", "x"], "evaluat"),
    ("unknown-global-flag", ["--frobnicate", "models"], "--frobnicate"),
    # ---- models
    ("models-unknown-source", ["models", "--source", "hub"], "hub"),
    ("models-unknown-dataset", ["models", "--dataset", "svhn"], "svhn"),
    ("models-unknown-threat-model", ["models", "--threat-model", "L3"], "L3"),
    ("models-unknown-flag", ["models", "--sauce", "builtin"], "--sauce"),
    # ---- evaluate (cases not in tests/test_cli.py)
    ("evaluate-corrupt-npz", EV + ["--metrics", "clean", "--data-dir", "bad_data"], "mnist_test.npz"),
    ("evaluate-truncated-npz", EV + ["--metrics", "clean", "--data-dir", "truncated_data"], "mnist_test.npz"),
    ("evaluate-npz-with-pickled-objects", EV + ["--metrics", "clean", "--data-dir", "pickled_data"], "mnist_test.npz"),
    ("evaluate-npz-without-labels", EV + ["--metrics", "clean", "--data-dir", "nolabels_data"], "mnist_test.npz"),
    ("evaluate-no-metric", EV + ["--metrics", ","], "--metrics"),
    ("evaluate-delta-zero", WDRO + ["--delta", "0"], "--delta"),
    ("evaluate-delta-above-one", WDRO + ["--delta", "0.1,2"], "--delta"),
    ("evaluate-delta-not-a-number", WDRO + ["--delta", "1/x"], "1/x"),
    ("evaluate-deltas-above-one", WDRO + ["--deltas", "0.1,2"], "--deltas values must lie in (0, 1]"),
    ("evaluate-batch-size-zero", EV + ["--metrics", "clean", "--batch-size", "0"], "--batch-size must be >= 1"),
    ("evaluate-wdro-steps-zero", WDRO + ["--wdro-steps", "0"], "--wdro-steps"),
    ("evaluate-wdro-p-three", WDRO + ["--wdro-p", "3"], "'3'"),
    ("evaluate-eps-infinite", EV + ["--metrics", "clean", "--eps", "inf"], "finite"),
    ("evaluate-seed-not-an-integer", EV + ["--metrics", "clean", "--seed", "x"], "--seed"),
    ("evaluate-n-examples-float", EV + ["--metrics", "clean", "--n-examples", "3.5"], "3.5"),
    ("evaluate-aa-attacks-without-custom", EV + ["--metrics", "autoattack", "--aa-version", "fast", "--aa-attacks",
                                            "apgd-ce"], "custom"),
    ("evaluate-config-value-of-wrong-type", ["evaluate", "--config", "wrong_type.yaml"], "--n-examples"),
    ("evaluate-config-not-utf8", ["evaluate", "--config", "binary.yaml"], "binary.yaml"),
    ("evaluate-records-is-a-file", EV[:-1] + ["afile", "--metrics", "clean"], "afile"),
    ("evaluate-wdro-with-corruptions", ["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist",
                                        "--threat-model", "corruptions", "--eps", "0.1", "--metrics", "wdro"],
     "Linf or L2"),
    ("evaluate-inv-cache-is-a-file", EV + ["--metrics", "invariance", "--inv-n", "2", "--inv-cache", "afile"],
     "afile"),
    ("evaluate-per-example-is-a-file", EV[:-1] + ["records_pe", "--metrics", "clean"], "per_example"),
    ("evaluate-records-jsonl-is-a-folder", EV[:-1] + ["records_dirfile", "--metrics", "clean"], "records.jsonl"),
    ("evaluate-seed-out-of-range", EV + ["--metrics", "clean", "--seed", "1" * 20], "--seed"),
    ("evaluate-device-mps", EV + ["--metrics", "clean", "--device", "mps"], "mps"),
    ("evaluate-model-dir-missing", EV + ["--metrics", "clean", "--model-dir", "no_models"], "no_models"),
    # ---- finetune
    ("finetune-eval-after-records-jsonl-is-a-folder", FT + ["--eval-after", "clean", "--records", "records_dirfile",
                                                            "--out", "new"], "records.jsonl"),
    ("finetune-inv-cache-is-a-file", FT + ["--triplet", "ia", "--inv-cache", "afile", "--out", "new"], "afile"),
    ("finetune-seed-out-of-range", FT + ["--seed", "-" + "9" * 20, "--out", "new"], "--seed"),
    ("finetune-steps-float", FT + ["--steps", "2.0", "--out", "new"], "--steps"),
    ("finetune-bool-as-string-in-config", ["finetune", "--config", "string_bool.yaml", "--out", "new"], "--amp"),
    ("finetune-resume-finished-run-with-other-option", FT + ["--resume", "--inner-steps", "2", "--out", "run"],
     "inner_steps: 1 -> 2"),
    ("finetune-unknown-method", FT + ["--method", "fgsm-trades", "--out", "new"], "fgsm-trades"),
    ("finetune-unknown-method-in-config", ["finetune", "--config", "bad_method.yaml", "--out", "new"],
     "--method must be one of fgsm-at, mart, n-fgsm-at, pgd-at, trades, udr, got 'fgsm-trades'"),
    ("finetune-steps-not-an-integer", FT + ["--steps", "two", "--out", "new"], "two"),
    ("finetune-steps-zero", FT + ["--steps", "0", "--out", "new"], "--steps"),
    ("finetune-steps-and-epochs", FT + ["--epochs", "1", "--out", "new"], "--epochs"),
    ("finetune-lr-zero", FT + ["--lr", "0", "--out", "new"], "--lr"),
    ("finetune-budget-cap-without-w2", FT + ["--w2-budget-cap", "0.3", "--out", "new"], "--threat w2"),
    ("finetune-stop-flipped-without-w2", FT + ["--w2-stop-flipped", "--out", "new"], "--threat w2"),
    ("finetune-w2-inner-unknown", FT + ["--threat", "w2", "--w2-inner", "greedy", "--out", "new"], "greedy"),
    ("finetune-w2-inner-without-w2", FT + ["--w2-inner", "knapsack", "--out", "new"], "--threat w2"),
    ("finetune-w2-inner-knapsack-stop-flipped", FT + ["--threat", "w2", "--w2-inner", "knapsack",
                                                      "--w2-stop-flipped", "--out", "new"], "--w2-stop-flipped"),
    ("finetune-budget-cap-below-delta", FT + ["--threat", "w2", "--delta", "0.2", "--w2-budget-cap", "0.1",
                                              "--out", "new"], "--delta"),
    ("finetune-cost-p-unknown", FT + ["--armor-cost-weight", "1", "--armor-cost-p", "3", "--out", "new"],
     "--armor-cost-p"),
    ("finetune-cost-with-w2", FT + ["--armor-cost-weight", "1", "--threat", "w2", "--out", "new"], "pointwise"),
    ("finetune-triplet-ia-on-cifar", FT_CIFAR + ["--triplet", "ia", "--out", "new"], "MNIST"),
    ("finetune-lr-nan", FT + ["--lr", "nan", "--out", "new"], "--lr"),
    ("finetune-eps-negative", FT + ["--eps", "-0.1", "--out", "new"], "eps"),
    ("finetune-delta-absurd", FT + ["--threat", "w2", "--delta", "5", "--out", "new"], "--delta"),
    ("finetune-inner-steps-zero", FT + ["--inner-steps", "0", "--out", "new"], "--inner-steps"),
    ("finetune-grad-clip-zero", FT + ["--grad-clip", "0", "--out", "new"], "--grad-clip"),
    ("finetune-init-negative-sigma", FT + ["--init", "perturb:-1", "--out", "new"], "SIGMA"),
    ("finetune-armor-t-above-one", FT + ["--reweight", "armor-kl", "--armor-t", "2", "--out", "new"], "--armor-t"),
    ("finetune-corruptions-threat-model", FT + ["--threat-model", "corruptions", "--eps", "0.1", "--out", "new"],
     "Linf or L2"),
    ("finetune-batch-larger-than-data", FT + ["--batch-size", "64", "--out", "new"], "64"),
    ("finetune-eval-after-unknown-metric", FT + ["--eval-after", "clean,robustnes", "--out", "new"], "robustnes"),
    ("finetune-n-eval-beyond-test-split", FT + ["--eval-after", "clean", "--n-eval", "20000", "--out", "new"],
     "20000"),
    ("finetune-aa-version-unknown", FT + ["--eval-after", "autoattack", "--aa-version", "quick", "--out", "new"],
     "quick"),
    ("finetune-unknown-device", FT + ["--device", "tpu", "--out", "new"], "tpu"),
    ("finetune-resume-without-a-run", FT + ["--resume", "--out", "new"], "no checkpoint"),
    ("finetune-over-a-run-without-resume", FT + ["--out", "run"], "--resume"),
    ("finetune-resume-with-changed-options", FT + ["--resume", "--beta", "1", "--out", "run"], "beta"),
    ("finetune-corrupt-training-data", FT + ["--data-dir", "bad_data", "--out", "new"], "mnist_train.npz"),
    ("finetune-missing-checkpoint", FT + ["--checkpoint", "nope.safetensors", "--out", "new"], "nope.safetensors"),
    ("finetune-corrupt-checkpoint", FT + ["--checkpoint", "garbage.pt", "--out", "new"], "garbage.pt"),
    ("finetune-plugin-module-missing", ["finetune", "--model", "no_such_module:build", "--dataset", "mnist",
                                        "--out", "new"], "no_such_module"),
    ("finetune-malformed-config", ["finetune", "--config", "malformed.yaml"], "malformed.yaml"),
    ("finetune-unknown-config-key", ["finetune", "--config", "typo.toml"], "stepz"),
    # ---- leaderboard
    ("leaderboard-records-is-a-file", ["leaderboard", "--records", "afile", "--out", "boards"], "afile"),
    ("leaderboard-out-under-a-file", ["leaderboard", "--records", "records", "--out", "afile/boards"], "afile"),
    ("leaderboard-record-without-dataset", ["leaderboard", "--records", "corrupt_records", "--out", "boards"],
     "corrupt"),
    ("leaderboard-unknown-flag", ["leaderboard", "--records", "records", "--format", "xlsx"], "--format"),
    # ---- sweep
    ("sweep-missing-file", ["sweep", "nope.yaml"], "nope.yaml"),
    ("sweep-empty-file", ["sweep", "empty.yaml"], "empty.yaml"),
    ("sweep-malformed-yaml", ["sweep", "malformed.yaml"], "malformed.yaml"),
    ("sweep-not-utf8", ["sweep", "binary.yaml"], "binary.yaml"),
    ("sweep-unknown-top-level-key", ["sweep", "sweep_unknown_key.yaml"], "bogus"),
    ("sweep-seeds-not-integers", ["sweep", "sweep_bad_seeds.yaml"], "seeds"),
    ("sweep-no-dataset", ["sweep", "sweep_no_dataset.yaml"], "dataset"),
    ("sweep-typo-in-job-options", ["sweep", "sweep_typo.yaml"], "stepz"),
    ("sweep-invalid-later-job-runs-nothing", ["sweep", "sweep_bad_lr.yaml"], "--lr"),
    ("sweep-shard-out-of-range", ["sweep", "sweep_ok.yaml", "--shard", "3/2"], "3/2"),
    ("sweep-shard-not-a-fraction", ["sweep", "sweep_ok.yaml", "--shard", "half"], "half"),
    # ---- plot
    ("plot-unknown-kind", ["plot", "bar-chart", "--dataset", "mnist", "--out", "p.png"], "bar-chart"),
    ("plot-missing-dataset", ["plot", "robustness-curve", "--out", "p.png"], "--dataset"),
    ("plot-unknown-dataset", ["plot", "robustness-curve", "--dataset", "svhn", "--out", "p.png"], "svhn"),
    ("plot-no-results", ["plot", "robustness-curve", "--dataset", "cifar10", "--out", "p.png"], "cifar10"),
    ("plot-corrupt-records", ["plot", "robustness-curve", "--records", "corrupt_records", "--dataset", "mnist",
                              "--out", "p.png"], "corrupt"),
    ("plot-out-under-a-file", PLOT + ["--out", "afile/p.png"], "afile"),
    ("plot-out-is-a-folder", PLOT + ["--out", "empty_dir"], "empty_dir"),
    ("plot-unknown-image-format", PLOT + ["--out", "p.docx"], "docx"),
    ("plot-embeddings-not-mnist", ["plot", "embeddings", "--dataset", "cifar10", "--model", "m", "--out", "p.png"],
     "mnist"),
    ("plot-embeddings-no-model", ["plot", "embeddings", "--dataset", "mnist", "--out", "p.png"], "--model"),
    ("plot-embeddings-titles-mismatch", ["plot", "embeddings", "--dataset", "mnist", "--model", "mnist-smallcnn",
                                         "--title", "a", "--title", "b", "--out", "p.png"], "--title"),
    # ---- demo
    ("demo-n-examples-zero", ["demo", "--n-examples", "0", "--out", "demo"], "n_examples"),
    ("demo-n-examples-not-an-integer", ["demo", "--n-examples", "many"], "many"),
    ("demo-n-examples-beyond-test-split", ["demo", "--n-examples", "20000"], "20000"),
    ("demo-out-under-a-file", ["demo", "--out", "afile/demo"], "afile"),
    # ---- invariance
    ("invariance-unknown-action", ["invariance", "make"], "make"),
    ("invariance-not-mnist", ["invariance", "generate", "--dataset", "cifar10", "--out", "inv"], "MNIST"),
    ("invariance-eps-out-of-range", ["invariance", "generate", "--eps", "2", "--out", "inv"], "eps"),
    ("invariance-n-zero", ["invariance", "generate", "--n", "0", "--out", "inv"], "--n"),
    ("invariance-unknown-grid", ["invariance", "generate", "--grid", "huge"], "huge"),
    ("invariance-out-is-a-file", ["invariance", "generate", "--n", "2", "--out", "afile"], "afile"),
]
SUBPROCESS_CASES = ["models-unknown-dataset", "evaluate-truncated-npz", "finetune-corrupt-checkpoint",
                    "sweep-typo-in-job-options", "plot-out-under-a-file", "demo-n-examples-zero"]


def _record(rid: str, **metrics) -> dict:
    return {"record_id": rid, "model": "mnist-smallcnn", "method": "pretrained", "source": "builtin",
            "dataset": "mnist", "threat_model": "Linf", "eps": 0.3, "n_examples": 100, "seed": 0,
            "data_file": "mnist_test.npz", "started_at": "2024-01-01T00:00:00+00:00",
            "metrics": {name: {"value": v, "n": 100, "lo": v - 5, "hi": v + 5} for name, v in metrics.items()}}


def _npz(path: Path, **arrays) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, data_dir) -> Path:
    """The folder every case starts from (copied per case)."""
    from wdro_finetune.config.finetune import make_finetune_config
    from wdro_finetune.train.loop import finetune

    ws = tmp_path_factory.mktemp("workspace")
    append_record(ws / "records", _record("r1", clean_acc=98.0, **{"w2_acc@1/20": 90.0}))
    append_record(ws / "corrupt_records", {"record_id": "x", "model": "m", "metrics": {}})
    real_test = (data_dir / "mnist_test.npz").read_bytes()
    for name in ("mnist_test.npz", "mnist_train.npz"):
        (ws / "bad_data").mkdir(exist_ok=True)
        (ws / "bad_data" / name).write_bytes(b"not an npz file at all" * 40)
    (ws / "truncated_data").mkdir()
    (ws / "truncated_data" / "mnist_test.npz").write_bytes(real_test[: len(real_test) // 3])
    _npz(ws / "pickled_data" / "mnist_test.npz", x=np.zeros((10, 28, 28), np.uint8),
         y=np.array([{"label": i} for i in range(10)], dtype=object))
    _npz(ws / "nolabels_data" / "mnist_test.npz", x=np.zeros((10, 28, 28), np.uint8))
    (ws / "afile").write_text("a regular file\n")
    (ws / "records_pe").mkdir()
    (ws / "records_pe" / "per_example").write_text("a file where a folder belongs\n")
    (ws / "records_dirfile" / "records.jsonl").mkdir(parents=True)
    (ws / "string_bool.yaml").write_text("model: mnist-smallcnn\ndataset: mnist\namp: 'false'\n")
    (ws / "bad_method.yaml").write_text("model: mnist-smallcnn\ndataset: mnist\nmethod: fgsm-trades\n")
    (ws / "empty_dir").mkdir()
    (ws / "garbage.pt").write_bytes(b"\x80\x04garbage" * 50)
    (ws / "wrong_type.yaml").write_text("model: mnist-smallcnn\ndataset: mnist\nn_examples: many\n")
    (ws / "binary.yaml").write_bytes(b"model: \xff\xfe\x00\x81\n" + bytes(range(256)))
    (ws / "malformed.yaml").write_text("model: [mnist-smallcnn\ndataset: mnist\n")
    (ws / "typo.toml").write_text('model = "mnist-smallcnn"\ndataset = "mnist"\nstepz = 3\n')
    (ws / "empty.yaml").write_text("")
    (ws / "sweep_ok.yaml").write_text(SWEEP_OK)
    (ws / "sweep_unknown_key.yaml").write_text(SWEEP_OK + "bogus: 1\n")
    (ws / "sweep_bad_seeds.yaml").write_text(SWEEP_OK + "seeds: [0, one]\n")
    (ws / "sweep_no_dataset.yaml").write_text(SWEEP_OK.replace("common: {dataset: mnist}\n", ""))
    (ws / "sweep_typo.yaml").write_text(SWEEP_OK + "  - name: trades\n    finetune: {stepz: 2, train_subset: 32}\n")
    (ws / "sweep_bad_lr.yaml").write_text(SWEEP_OK + "  - name: trades\n    finetune: {steps: 1, lr: -1}\n")
    # a finished run made with FT's options
    options = dict(model="mnist-smallcnn", dataset="mnist", pretrained=False, train_subset=32, holdout=0,
                   batch_size=8, steps=1, inner_steps=1, schedule="constant", out=str(ws / "run"))
    finetune(make_finetune_config(options))
    return ws


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def assert_one_line_error(rc: int, err: str, expected: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected exactly one line on stderr, got {err!r}"
    assert lines[0].startswith(PREFIX), lines[0]
    assert expected in lines[0], lines[0]


@pytest.fixture
def ws(workspace, tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "ws"
    shutil.copytree(workspace, folder, symlinks=True)
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_no_file(argv, expected, ws, capsys, no_network):
    before = snapshot(ws)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert_one_line_error(rc, err, expected)
    assert out == ""
    assert snapshot(ws) == before, "bad input must leave every file and folder as it was"


def test_the_table_covers_every_subcommand_with_25_cases_or_more():
    firsts = {argv[0] for _, argv, _ in CASES}
    assert {"models", "evaluate", "finetune", "leaderboard", "sweep", "plot", "demo", "invariance"} <= firsts
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


def test_bad_input_in_real_processes(workspace, tmp_path):
    """A handful of the cases through the installed console script, all at once (one line, exit 2, no damage)."""
    script = Path(sys.executable).with_name("wdro-finetune")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "wdro_finetune.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # warnings not silenced: they would be extra lines on stderr
    cases = {c[0]: c for c in CASES}
    procs = {}
    for name in SUBPROCESS_CASES:
        folder = tmp_path / name
        shutil.copytree(workspace, folder, symlinks=True)
        procs[name] = (folder, snapshot(folder), subprocess.Popen(command + cases[name][1], cwd=folder, env=env,
                                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                                   text=True))
    for name, (folder, before, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        assert_one_line_error(proc.returncode, err, cases[name][2])
        assert out == "" and snapshot(folder) == before, name
