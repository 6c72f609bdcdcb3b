"""Property: any small configuration, sensible or not, either runs (exit 0) or stops with exit code 2 and a
one-line message; never a traceback, never another exit code.

Random flag combinations go through ``finetune --steps 2`` and ``evaluate --n-examples 4`` in-process. The
examples are derandomised (the same ones every run) so the suite is stable; set ``WDRO_PROPERTY_EXAMPLES=200``
and ``WDRO_PROPERTY_RANDOM=1`` to search wider.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wdro_finetune.cli import main

PREFIX = "wdro-finetune: error:"
EXAMPLES = int(os.environ.get("WDRO_PROPERTY_EXAMPLES", "20"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    derandomize=not os.environ.get("WDRO_PROPERTY_RANDOM"),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _flags(options: dict[str, str | None]) -> list[str]:
    argv = []
    for flag, value in options.items():
        argv += [flag] if value is None else [flag, value]
    return argv


# flag -> (sensible values, values that must be refused); None: a flag without a value
FINETUNE_VALUES = {
    "--method": (["trades", "mart", "udr", "pgd-at", "fgsm-at"], ["bogus"]),
    "--threat": (["pointwise", "w2"], ["w3"]),
    "--threat-model": (["Linf", "L2", "l2"], ["corruptions"]),
    "--eps": (["0.3", "8/255", "0.5"], ["0", "-0.1", "3", "nan", "x"]),
    "--delta": (["0.1", "1/255"], ["0", "2"]),
    "--beta": (["0", "1", "6"], ["-1"]),
    "--inner-steps": (["1", "2"], ["0", "a"]),
    "--batch-size": (["1", "2", "8", "16"], ["0", "-4", "64"]),
    "--train-subset": (["16", "32"], ["0", "1"]),
    "--holdout": (["0", "4"], ["-1"]),
    "--lr": (["0.01", "1e-4", "1"], ["0", "-1", "1e30"]),
    "--optimizer": (["sgd", "adamw"], ["adam"]),
    "--schedule": (["cosine", "step", "constant"], ["linear"]),
    "--warmup": (["0", "1", "5"], ["-1"]),
    "--weight-decay": (["0", "5e-4"], ["-1"]),
    "--grad-clip": (["1", "0.01"], ["0"]),
    "--reweight": (["none", "armor-kl", "armor-kl-learned", "armor-alpha"], ["armor"]),
    "--armor-eps": (["0.02", "0.5"], ["0", "-1"]),
    "--armor-alpha": (["6", "1.5"], ["1", "0"]),
    "--armor-t": (["0", "0.5", "1"], ["1.5"]),
    "--armor-kappa": (["0.1", "0"], ["-1"]),
    "--armor-lr": (["0.01"], ["0", "-1"]),
    "--init": (["continue", "reinit-head", "perturb:0.1"], ["perturb:0", "bogus"]),
    "--seed": (["0", "7"], ["x"]),
    "--checkpoint-every": (["1", "5"], ["0"]),
    "--pretrained": ([None], []),
    "--no-pretrained": ([None], []),
}
SENSIBLE_FINETUNE = st.fixed_dictionaries({}, optional={k: st.sampled_from(v[0]) for k, v in FINETUNE_VALUES.items()})
ANY_FINETUNE = st.fixed_dictionaries({}, optional={k: st.sampled_from(v[0] + v[1]) for k, v in FINETUNE_VALUES.items()})
FINETUNE_FLAGS = st.one_of(SENSIBLE_FINETUNE, ANY_FINETUNE)  # sensible ones too: combinations must train or refuse

EVALUATE_VALUES = {
    "--threat-model": (["Linf", "L2"], ["corruptions"]),
    "--eps": (["0.3", "8/255", "0.5"], ["0", "-0.1", "3", "1e9", "x"]),
    "--batch-size": (["1", "3", "4"], ["0", "-1"]),
    "--seed": (["0", "3"], ["x"]),
    "--aa-attacks": (["apgd-ce", "apgd-ce,apgd-dlr", "fab"], ["pgd", ""]),
    "--wdro-p": (["2", "inf"], ["3"]),
    "--delta": (["0.1", "1/255,2/255"], ["0", "1.5", "a", ","]),
    "--wdro-steps": (["1", "2"], ["0", "-3"]),
    "--wdro-loss": (["ce", "dlr", "redlr"], ["kl"]),
    "--wdro-attack": (["pgd", "fgsm"], ["cw"]),
}
METRICS = (["clean", "wdro", "autoattack", "clean,wdro", "clean,autoattack,wdro"], ["bogus", ","])
# AutoAttack "standard" is left out: its Square attack takes minutes on robust points
SENSIBLE_EVALUATE = st.fixed_dictionaries(
    {"--metrics": st.sampled_from(METRICS[0]), "--aa-version": st.just("fast")},
    optional={k: st.sampled_from(v[0]) for k, v in EVALUATE_VALUES.items() if k != "--aa-attacks"})
ANY_EVALUATE = st.fixed_dictionaries(
    {"--metrics": st.sampled_from(METRICS[0] + METRICS[1]), "--aa-version": st.sampled_from(["fast", "custom"])},
    optional={k: st.sampled_from(v[0] + v[1]) for k, v in EVALUATE_VALUES.items()})
EVALUATE_FLAGS = st.one_of(SENSIBLE_EVALUATE, ANY_EVALUATE)


def _check(rc: int, out: str, err: str, argv: list[str]) -> None:
    assert rc in (0, 2), f"exit code {rc} for {argv}: {err[-2000:]}"
    assert "Traceback" not in err, err
    if rc == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(PREFIX) and len(lines[0]) > len(PREFIX) + 5, \
            f"{argv}: {err!r}"


@pytest.mark.filterwarnings("ignore")
@SETTINGS
@given(flags=FINETUNE_FLAGS)
def test_random_finetune_configs_succeed_or_fail_with_one_line(flags, capsys, no_network):
    capsys.readouterr()
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["finetune", "--model", "mnist-smallcnn", "--dataset", "mnist", "--steps", "2",
                *_flags({"--train-subset": "16", "--holdout": "4", "--batch-size": "8", "--inner-steps": "1",
                         **flags}), "--out", str(Path(tmp) / "run")]
        rc = main(argv)
        out, err = capsys.readouterr()
        _check(rc, out, err, argv)
        if rc == 0:
            assert (Path(tmp) / "run" / "model.safetensors").is_file() and "2 steps" in out


@pytest.mark.filterwarnings("ignore")
@SETTINGS
@given(flags=EVALUATE_FLAGS)
def test_random_evaluate_configs_succeed_or_fail_with_one_line(flags, smallcnn_checkpoint, capsys, no_network):
    capsys.readouterr()
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--n-examples", "4",
                "--checkpoint", str(smallcnn_checkpoint),
                *_flags({"--wdro-steps": "2", **flags}), "--records", str(Path(tmp) / "rec")]
        rc = main(argv)
        out, err = capsys.readouterr()
        _check(rc, out, err, argv)
        if rc == 0:
            assert (Path(tmp) / "rec" / "records.jsonl").is_file() and "record" in out
