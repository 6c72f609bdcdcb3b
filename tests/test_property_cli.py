"""Property: every option of every subcommand, given a bad value, gives exit 2, at most one line on stderr, no
traceback, and leaves every file of the working folder as it was. In-process (``cli.main``), in a copy of
``test_bad_input``'s working folder. ``BAD`` must name every option of every subcommand (a new option without
bad values fails ``test_the_table_names_every_option``); an empty list marks an option without a value that is
bad in every context (a flag, free text, or an option only read with another one, covered in context by the
tables of test_bad_input.py). ``WDRO_PROPERTY_EXAMPLES`` widens the hypothesis search.
"""

from __future__ import annotations

import os
import shutil
import traceback

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wdro_finetune.cli import _COMMANDS, _Parser, main

from test_bad_input import FT, snapshot, workspace  # noqa: F401  (the module's fixture)

INT = ["x", "3.5", "1e3", "9" * 20, "-" + "9" * 20]
NUM = ["x", "nan", "inf", "1/0", "9e999"]
OUT_DIR = ["afile", "afile/sub"]
MODEL_ARGS = {
    "--model": ["mnist-smalcnn", "no_such_module:build", "timm:no-such-net"], "--source": ["hub"],
    "--checkpoint": ["nope.pt", "garbage.pt"], "--trust-checkpoint": [], "--model-dir": ["no_models", "afile"],
    "--dataset": ["svhn", "cifar10"], "--threat-model": ["L3"], "--eps": NUM + ["0", "-1", "8"],
    "--data-dir": ["afile", "bad_data"], "--device": ["tpu", "mps", "cuda:99", "cuda"], "--seed": INT + ["-1"],
    "--batch-size": INT + ["0"], "--config": ["nope.yaml", "malformed.yaml", "binary.yaml", "afile"],
}
BASE = {
    "models": ["models"],
    "evaluate": ["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--n-examples", "4", "--metrics",
                 "clean", "--records", "records"],
    "finetune": FT + ["--out", "new"],
    "leaderboard": ["leaderboard", "--records", "records", "--out", "boards"],
    "export": ["export", "robustbench", "--records", "records", "--record", "nope", "--out", "exp"],
    "invariance": ["invariance", "generate", "--n", "2", "--grid", "fast", "--out", "inv"],
    "sweep": ["sweep", "sweep_ok.yaml", "--dry-run"],
    "plot": ["plot", "robustness-curve", "--records", "records", "--dataset", "mnist", "--out", "p.png"],
    "demo": ["demo", "--out", "demo", "--n-examples", "4"],
}
BAD = {
    "models": {"--source": ["hub"], "--dataset": ["svhn"], "--threat-model": ["L3"], "--pattern": []},
    "evaluate": {**MODEL_ARGS, "--n-examples": INT + ["0", "10001"], "--metrics": ["clean,robustnes", ","],
                 "--allow-lossy-test": [], "--records": OUT_DIR + ["records_pe", "records_dirfile"],
                 "--pretrained": [], "--method": [], "--aa-version": ["quick"], "--aa-attacks": ["pgd", "apgd-ce"],
                 "--inv-n": INT + ["-1"], "--inv-eps": NUM + ["2"], "--inv-grid": ["huge"], "--inv-cache": ["afile"],
                 "--wdro-p": ["3"], "--deltas": ["0", "x", ",", "0.1"], "--wdro-loss": ["kl"],
                 "--wdro-steps": INT + ["0"], "--wdro-attack": ["cw"],
                 "--dist-norm": ["L3"], "--dist-attacks": ["deepfool", "refine"], "--dist-eps": NUM + ["-1"],
                 "--dist-steps": INT + ["0"]},
    "finetune": {**MODEL_ARGS, "--method": ["bogus"], "--threat": ["w3"], "--delta": NUM + ["0", "5"],
                 "--w2-budget-cap": NUM + ["0.01"], "--w2-stop-flipped": [], "--w2-inner": ["greedy"], "--beta": NUM + ["-1"],
                 "--inner-examples": ["fgsm"], "--precomputed-eps": NUM + ["0", "2"], "--precomputed-source": ["nope.safetensors"],
                 "--inner-steps": INT + ["0"], "--inner-step-size": NUM + ["0"], "--eps-ramp": INT + ["-1"],
                 "--init": ["bogus", "perturb:0", "perturb:x"], "--reweight": ["armor"], "--armor-eps": NUM,
                 "--armor-kappa": NUM, "--armor-alpha": NUM, "--armor-t": NUM + ["2"], "--armor-lr": NUM + ["0"],
                 "--armor-cost-weight": NUM + ["-1"], "--armor-cost-p": ["x", "nan", "3"],
                 "--armor-cost-q": NUM + ["0"], "--pretrained": [], "--triplet": ["x"], "--triplet-margin": NUM,
                 "--triplet-weight-sa": NUM, "--triplet-weight-ia": NUM, "--inv-cache": [],  # read with --triplet ia
                 "--triplet-norm-weight": NUM, "--triplet-distance": ["l2"], "--triplet-miner": ["hardest"],
                 "--triplet-pool": INT + ["0"], "--epochs": INT + ["0"], "--steps": INT + ["0"],
                 "--lr": NUM + ["0"], "--optimizer": ["adam"], "--schedule": ["linear"], "--warmup": INT + ["-1"],
                 "--weight-decay": NUM + ["-1"], "--grad-clip": NUM + ["0"], "--train-subset": INT + ["0"],
                 "--holdout": INT + ["-1"], "--amp": [], "--channels-last": [], "--out": OUT_DIR + ["run"],
                 "--checkpoint-every": INT + ["0"], "--resume": [], "--eval-after": ["clean,robustnes"],
                 "--n-eval": INT, "--aa-version": [], "--records": []},  # the last two: read with --eval-after
    "leaderboard": {"--records": ["afile", "nope", "corrupt_records"], "--out": OUT_DIR, "--html": OUT_DIR,
                    "--sweep": ["nope.yaml", "malformed.yaml"]},
    "export": {"format": ["onnx"], "--record": ["nope"], "--records": ["afile", "nope", "corrupt_records"],
               "--out": OUT_DIR, "--checkpoint": ["nope.pt"], "--name": [], "--paper-name": [], "--link": [],
               "--authors": [], "--venue": [], "--additional-data": []},
    "invariance": {"action": ["make"], "--dataset": ["svhn", "cifar10"], "--eps": NUM + ["2"], "--split": ["val"],
                   "--n": INT + ["0"], "--grid": ["huge"], "--out": OUT_DIR, "--data-dir": ["afile", "bad_data"]},
    "sweep": {"file": ["nope.yaml", "afile", "malformed.yaml", "sweep_typo.yaml"],
              "--shard": ["x", "0/2", "3/2", "1/0"], "--dry-run": [], "--job": ["nosuchjob"], "--prune": []},
    "plot": {"kind": ["bar-chart"], "--dataset": ["svhn"], "--out": ["afile/p.png", "empty_dir", "p.docx"],
             "--records": ["afile", "corrupt_records"], "--threat-model": ["L3"], "--source": ["hub"],
             "--inv-grid": ["huge"], "--n": INT,  # the other embeddings options are read with `plot embeddings`
             "--model": [], "--checkpoint": [], "--title": [], "--model-dir": [], "--trust-checkpoint": [],
             "--eps": [], "--inv-cache": [], "--data-dir": []},
    "demo": {"--out": OUT_DIR, "--n-examples": INT + ["0", "20000"]},
}
POSITIONAL = {("invariance", "action"): 1, ("sweep", "file"): 1, ("plot", "kind"): 1, ("export", "format"): 1}
CASES = [(cmd, opt, value) for cmd, table in BAD.items() for opt, values in table.items() for value in values]
SETTINGS = settings(max_examples=int(os.environ.get("WDRO_PROPERTY_EXAMPLES", "40")), deadline=None,
                    database=None, derandomize=not os.environ.get("WDRO_PROPERTY_RANDOM"),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def argv_for(cmd: str, option: str, value: str) -> list[str]:
    """The command's base argv with ``option`` set to ``value`` (a positional replaced in place)."""
    base = list(BASE[cmd])
    if (cmd, option) in POSITIONAL:
        base[POSITIONAL[(cmd, option)]] = value
        return base
    if option in base:  # replace the base's value
        i = base.index(option)
        return base[:i + 1] + [value] + base[i + 2:]
    return base + [option, value]


def test_the_table_names_every_option():
    for cmd, (add, _, _) in _COMMANDS.items():
        parser = _Parser(add_help=False)
        add(parser)
        names = {a.option_strings[0] if a.option_strings else a.dest for a in parser._actions}
        assert names == set(BAD[cmd]), (cmd, names ^ set(BAD[cmd]))


@pytest.fixture(scope="module")
def ws(workspace, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("property") / "ws"
    shutil.copytree(workspace, folder, symlinks=True)
    return folder


def check_refused(argv: list[str], ws, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ws)
    before = snapshot(ws)
    try:
        rc = main(argv)
    except SystemExit as exc:  # must never happen for a bad value
        rc = exc.code
    except Exception:
        pytest.fail(f"{argv}: traceback\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err and len(err.splitlines()) <= 1, (argv, err)
    assert snapshot(ws) == before, f"{argv} changed files"


@pytest.mark.parametrize("cmd,option,value", [c for c in CASES if c[2] == BAD[c[0]][c[1]][0]],
                         ids=lambda v: str(v)[:24])
def test_every_option_refuses_its_first_bad_value(cmd, option, value, ws, capsys, monkeypatch):
    check_refused(argv_for(cmd, option, value), ws, capsys, monkeypatch)


GENERATED = st.one_of(
    st.sampled_from(CASES),
    st.tuples(st.sampled_from([(c, o) for c, o, v in CASES if v == "1e3"]),  # the integer options
              st.integers().filter(lambda v: abs(v) > 2**32).map(str)).map(lambda t: (*t[0], t[1])),
)


@SETTINGS
@given(case=GENERATED)
def test_generated_bad_values_are_one_line_exit_2_and_touch_no_file(case, ws, capsys, monkeypatch):
    check_refused(argv_for(*case), ws, capsys, monkeypatch)
