"""The command line: bad input gives one line on stderr, exit code 2, no traceback and no damage;
``--config`` (YAML / TOML) with flags overriding it; help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wdro_finetune.cli import main
from wdro_finetune.data.datasets import ENV_DATA_DIR
from wdro_finetune.models.builtin import PreActResNetSmall
from wdro_finetune.models.checkpoint import save_safetensors
from wdro_finetune.results.records import RECORDS_FILE, read_records

PREFIX = "wdro-finetune: error:"


@pytest.fixture
def existing(tmp_path):
    """A records folder that already holds one record line (and must be left exactly as it is)."""
    records = tmp_path / "records"
    records.mkdir()
    (records / RECORDS_FILE).write_bytes(b'{"record_id": "old", "model": "x", "note": "caf\\u00e9"}\n')
    return records


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected exactly one line on stderr, got {err!r}"
    assert lines[0].startswith(PREFIX)
    return lines[0]


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def bad_files(tmp_path):
    files = {}
    files["garbage.pt"] = tmp_path / "garbage.pt"
    files["garbage.pt"].write_bytes(b"definitely not a torch file" * 10)
    files["garbage.safetensors"] = tmp_path / "garbage.safetensors"
    files["garbage.safetensors"].write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    files["resnet.safetensors"] = save_safetensors(PreActResNetSmall(), tmp_path / "resnet.safetensors")
    files["bad.yaml"] = tmp_path / "bad.yaml"
    files["bad.yaml"].write_text("model: [mnist-smallcnn\ndataset: mnist\n")
    files["bad.toml"] = tmp_path / "bad.toml"
    files["bad.toml"].write_text('model = "mnist-smallcnn"\ndataset = \n')
    files["list.yaml"] = tmp_path / "list.yaml"
    files["list.yaml"].write_text("- model\n- dataset\n")
    files["typo.yaml"] = tmp_path / "typo.yaml"
    files["typo.yaml"].write_text("modle: mnist-smallcnn\ndataset: mnist\n")
    files["typo.toml"] = tmp_path / "typo.toml"
    files["typo.toml"].write_text('model = "mnist-smallcnn"\ndataset = "mnist"\nn-exemples = 10\n')
    files["conf.json"] = tmp_path / "conf.json"
    files["conf.json"].write_text('{"model": "mnist-smallcnn"}')
    files["afile"] = tmp_path / "afile"
    files["afile"].write_text("a regular file\n")
    files["empty_dir"] = tmp_path / "empty_data"
    files["empty_dir"].mkdir()
    return files


MNIST = ["--model", "mnist-smallcnn", "--dataset", "mnist", "--metrics", "clean"]

# (id, extra args built from the bad files, text the message must contain)
CASES = [
    ("unknown-model", lambda f: ["--model", "mnist-smalcnn", "--dataset", "mnist"], "mnist-smallcnn"),
    ("unknown-robustbench-name", lambda f: ["--model", "Wong2020Fsat", "--dataset", "cifar10"], "Wong2020Fast"),
    ("robustbench-name-with-mnist", lambda f: ["--model", "Wong2020Fast", "--dataset", "mnist"], "mnist"),
    ("robustbench-name-wrong-threat", lambda f: ["--model", "Wong2020Fast", "--dataset", "cifar10",
                                                 "--threat-model", "corruptions", "--eps", "0.1"], "Wong2020Fast"),
    ("builtin-for-other-dataset", lambda f: ["--model", "cifar10-resnet-small", "--dataset", "mnist"], "cifar10"),
    ("unknown-dataset", lambda f: ["--model", "mnist-smallcnn", "--dataset", "svhn"], "svhn"),
    ("unknown-threat-model", lambda f: MNIST + ["--threat-model", "L3"], "L3"),
    ("eps-zero", lambda f: MNIST + ["--eps", "0"], "eps"),
    ("eps-negative", lambda f: MNIST + ["--eps", "-0.1"], "eps"),
    ("eps-absurd-linf", lambda f: MNIST + ["--eps", "8"], "8"),
    ("eps-absurd-l2", lambda f: MNIST + ["--threat-model", "L2", "--eps", "1000"], "1000"),
    ("eps-not-a-number", lambda f: MNIST + ["--eps", "eight"], "eight"),
    ("n-larger-than-split", lambda f: MNIST + ["--n-examples", "10001"], "10000"),
    ("n-zero", lambda f: MNIST + ["--n-examples", "0"], "n_examples"),
    ("batch-size-zero", lambda f: MNIST + ["--batch-size", "0"], "batch"),
    ("unknown-metric", lambda f: MNIST[:-1] + ["clean,robustnes"], "robustnes"),
    ("unknown-aa-attack", lambda f: MNIST[:-1] + ["clean,autoattack", "--aa-version", "custom", "--aa-attacks",
                                                "apgd-ce,pgd"], "pgd"),
    ("corrupt-pt-checkpoint", lambda f: MNIST + ["--checkpoint", str(f["garbage.pt"])], "garbage.pt"),
    ("corrupt-safetensors-checkpoint", lambda f: MNIST + ["--checkpoint", str(f["garbage.safetensors"])],
     "garbage.safetensors"),
    ("missing-checkpoint", lambda f: MNIST + ["--checkpoint", str(f["empty_dir"] / "nope.pt")], "nope.pt"),
    ("mismatching-checkpoint", lambda f: MNIST + ["--checkpoint", str(f["resnet.safetensors"])], "does not match"),
    ("malformed-yaml-config", lambda f: ["--config", str(f["bad.yaml"])], "bad.yaml"),
    ("malformed-toml-config", lambda f: ["--config", str(f["bad.toml"])], "bad.toml"),
    ("config-not-a-mapping", lambda f: ["--config", str(f["list.yaml"])], "list.yaml"),
    ("config-wrong-suffix", lambda f: ["--config", str(f["conf.json"])], "conf.json"),
    ("config-missing", lambda f: ["--config", str(f["empty_dir"] / "none.yaml")], "none.yaml"),
    ("unknown-option-in-yaml-config", lambda f: ["--config", str(f["typo.yaml"])], "modle"),
    ("unknown-option-in-toml-config", lambda f: ["--config", str(f["typo.toml"])], "n_exemples"),
    ("unknown-flag", lambda f: MNIST + ["--n-exemples", "3"], "--n-exemples"),
    ("bad-choice", lambda f: MNIST + ["--aa-version", "quick"], "quick"),
    ("missing-model", lambda f: ["--dataset", "mnist"], "--model"),
    ("cuda-unavailable-or-unknown-device", lambda f: MNIST + ["--device", "tpu"], "tpu"),
]


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_damages_nothing(build, expected, bad_files, existing, smallcnn_checkpoint,
                                                          capsys, no_network):
    args = build(bad_files)
    if "--checkpoint" not in args and "mnist-smallcnn" in args:
        args = args + ["--checkpoint", str(smallcnn_checkpoint)]
    before = _snapshot(existing)
    rc, out, err = run_cli(capsys, ["evaluate", *args, "--records", str(existing)])
    line = assert_one_line_error(rc, err)
    assert expected in line, line
    assert _snapshot(existing) == before, "existing records must be byte-for-byte unchanged"


def test_unwritable_records_folder_is_one_line_error(bad_files, existing, smallcnn_checkpoint, capsys):
    before = _snapshot(existing)
    under_a_file = bad_files["afile"] / "records"
    rc, _, err = run_cli(capsys, ["evaluate", *MNIST, "--checkpoint", str(smallcnn_checkpoint),
                                  "--records", str(under_a_file)])
    line = assert_one_line_error(rc, err)
    assert str(under_a_file) in line
    assert bad_files["afile"].read_text() == "a regular file\n"
    assert _snapshot(existing) == before


def test_data_missing_offline_fails_fast(bad_files, existing, smallcnn_checkpoint, capsys, monkeypatch, no_network):
    """Empty --data-dir and no $WDRO_DATA_DIR: torchvision tries to download (no network) and we stop at once."""
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    before = _snapshot(existing)
    start = time.perf_counter()
    rc, _, err = run_cli(capsys, ["evaluate", *MNIST, "--n-examples", "10000", "--checkpoint",
                                  str(smallcnn_checkpoint), "--data-dir", str(bad_files["empty_dir"]),
                                  "--records", str(existing)])
    assert time.perf_counter() - start < 30
    line = assert_one_line_error(rc, err)
    assert "mnist_test.npz" in line
    assert _snapshot(existing) == before


def test_cifar10_over_1000_offline_without_lossy_is_one_line_error(existing, tmp_path, capsys, no_network):
    rc, _, err = run_cli(capsys, ["evaluate", "--model", "cifar10-resnet-small", "--dataset", "cifar10",
                                  "--metrics", "clean", "--n-examples", "2000", "--data-dir", str(tmp_path / "dl"),
                                  "--records", str(existing)])
    line = assert_one_line_error(rc, err)
    assert "cifar10_test.npz" in line and "--allow-lossy-test" in line


def test_console_script_subprocess_prints_one_line_and_no_traceback(existing, tmp_path):
    script = Path(sys.executable).with_name("wdro-finetune")
    if not script.is_file():
        pytest.skip("console script wdro-finetune not installed next to the interpreter")
    before = _snapshot(existing)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([str(script), "evaluate", "--model", "mnist-smalcnn", "--dataset", "mnist",
                          "--records", str(existing)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=env)
    line = assert_one_line_error(out.returncode, out.stderr)
    assert "mnist-smallcnn" in line
    assert out.stdout == ""
    assert _snapshot(existing) == before


# ---------------------------------------------------------------- config files


def test_yaml_config_sets_options_and_flags_override(tmp_path, smallcnn_checkpoint, capsys):
    records = tmp_path / "rec"
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: mnist-smallcnn\ndataset: mnist\ncheckpoint: {smallcnn_checkpoint}\n"
                      f"n_examples: 16\nmetrics: clean\neps: 0.25\nseed: 5\nrecords: {records}\n")
    rc, out, err = run_cli(capsys, ["evaluate", "--config", str(config), "--n-examples", "8", "--seed", "6"])
    assert rc == 0, err
    [rec] = read_records(records)
    assert rec["n_examples"] == 8 and rec["seed"] == 6  # flags win
    assert rec["eps"] == 0.25 and rec["metrics"].keys() == {"clean_acc"}  # from the file
    assert rec["record_id"] in out and "clean_acc=" in out


def test_toml_config_with_dashed_keys_lists_and_fractions(tmp_path, smallcnn_checkpoint, capsys):
    records = tmp_path / "rec"
    config = tmp_path / "eval.toml"
    config.write_text(f'model = "mnist-smallcnn"\ndataset = "mnist"\ncheckpoint = "{smallcnn_checkpoint}"\n'
                      f'n-examples = 12\nmetrics = ["clean"]\neps = "8/255"\nbatch-size = 5\nrecords = "{records}"\n')
    rc, _, err = run_cli(capsys, ["evaluate", "--config", str(config)])
    assert rc == 0, err
    [rec] = read_records(records)
    assert rec["n_examples"] == 12 and rec["batch_size"] == 5
    assert rec["eps"] == pytest.approx(8 / 255)
    rc, _, err = run_cli(capsys, ["evaluate", "--config", str(config), "--eps", "0.1"])
    assert rc == 0, err
    assert read_records(records)[-1]["eps"] == pytest.approx(0.1)


def test_evaluate_with_autoattack_from_the_command_line(tmp_path, smallcnn_checkpoint, capsys):
    records = tmp_path / "rec"
    rc, out, err = run_cli(capsys, ["evaluate", *MNIST[:-1], "clean,autoattack", "--aa-version", "fast",
                                    "--n-examples", "8", "--batch-size", "8", "--checkpoint", str(smallcnn_checkpoint),
                                    "--records", str(records)])
    assert rc == 0, err
    [rec] = read_records(records)
    assert rec["labels"]["aa_version"] == "fast" and rec["eps"] == 0.3
    assert rec["metrics"]["autoattack_acc"]["value"] <= rec["metrics"]["clean_acc"]["value"]
    assert json.loads((records / RECORDS_FILE).read_text())["record_id"] == rec["record_id"]


# ---------------------------------------------------------------- help and listing


@pytest.mark.parametrize("args,expected", [
    (["--help"], ["evaluate", "leaderboard", "models"]),
    (["evaluate", "--help"], ["--model", "--n-examples", "--aa-version", "--config", "--allow-lossy-test"]),
    (["models", "--help"], ["--source"]),
    (["leaderboard", "--help"], ["--records", "--out"]),
    (["evaluate", "--help"], ["--deltas DELTAS, --delta DELTAS", "--wdro-p {2,inf}"]),
    (["finetune", "--help"], ["--method {fgsm-at,mart,n-fgsm-at,pgd-at,trades,udr}", "--w2-inner {budget,knapsack}",
                              "--reweight {armor-alpha,armor-kl,armor-kl-learned,none}", "--triplet {ia,none,sa,sa+ia}",
                              "--triplet-miner {nearest,random,semi-hard}", "--triplet-distance {abs-cosine,cosine}"]),
])
def test_help_texts(args, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out


def test_models_lists_builtin_and_robustbench_names(capsys):
    assert main(["models", "--source", "builtin"]) == 0
    out = capsys.readouterr().out
    assert "builtin\tmnist-smallcnn" in out and "builtin\tcifar10-resnet-small" in out
    assert main(["models", "--source", "robustbench", "--dataset", "cifar10", "--threat-model", "Linf"]) == 0
    out = capsys.readouterr().out
    assert "robustbench\tWong2020Fast\tcifar10 Linf" in out.splitlines()


def test_no_subcommand_is_a_one_line_error(capsys):
    rc, _, err = run_cli(capsys, [])
    assert_one_line_error(rc, err)


# ---------------------------------------------------------------- evaluate --deltas (old name --delta)

def test_evaluate_deltas_and_its_old_name_delta_resolve_to_the_same_config(tmp_path):
    from wdro_finetune.cli import build_parser, resolve_options
    from wdro_finetune.evaluate.runner import canonical_options, make_eval_config

    def resolved(*extra: str) -> dict:
        argv = ["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--metrics", "wdro,distances", *extra]
        return resolve_options(build_parser().parse_args(argv), canonical=canonical_options)

    by_flag = [resolved(flag, "0.05,0.1") for flag in ("--deltas", "--delta")]
    assert by_flag[0] == by_flag[1] and by_flag[0]["delta"] == "0.05,0.1" and "deltas" not in by_flag[0]
    by_key = []
    for key in ("delta", "deltas"):  # config-file keys: delta (as sweeps and records keep it), or the flag's name
        (tmp_path / f"{key}.yaml").write_text(f"{key}: 0.05,0.1\n")
        by_key.append(resolved("--config", str(tmp_path / f"{key}.yaml")))
    configs = [make_eval_config(options) for options in by_flag + by_key]
    assert all(config == configs[0] for config in configs)
    assert configs[0].metric_options["wdro"]["deltas"] == configs[0].metric_options["distances"]["deltas"] == [0.05,
                                                                                                              0.1]


def test_evaluate_deltas_given_under_both_names_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "both.yaml"
    config.write_text("delta: 0.1\ndeltas: 0.2\n")
    rc = main(["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--metrics", "wdro", "--config",
               str(config)])
    line = assert_one_line_error(rc, capsys.readouterr().err)
    assert "--deltas" in line and "twice" in line
