"""Our AutoAttack runner against pyautoattack called directly (same model, data, seed): identical flags.

The model is a SmallCNN trained cleanly on real MNIST (conftest); eps 0.2 leaves a few points that
survive APGD-CE, so APGD-T (and, for ``standard``, FAB-T and Square) really run on some points.
"""

from __future__ import annotations

import random

import numpy as np
import pyautoattack
import pytest
import torch

from wdro_finetune.config import Dataset, ThreatModel
from wdro_finetune.evaluate.autoattack import AutoAttackMetric, autoattack_flags
from wdro_finetune.evaluate.runner import EvalConfig, evaluate
from wdro_finetune.results.records import load_per_example

N = 32
EPS = 0.2
SEED = 0


def direct_flags(model, x, y, *, norm, eps, version, seed, attacks=None):
    """pyautoattack's own API, one call with batch_size = n. For ``custom`` the attack settings are
    those of pyautoattack's ``standard`` version (1 restart, 9 target classes, 5000 Square queries)."""
    kwargs = {"attacks": list(attacks)} if version == "custom" else {}
    adversary = pyautoattack.AutoAttack(model, norm=norm, eps=eps, version=version, device="cpu", seed=seed, **kwargs)
    if version == "custom":
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_restarts = 1
        adversary.apgd_targeted.n_target_classes = 9
        adversary.fab.n_restarts = 1
        adversary.fab.n_target_classes = 9
        adversary.square.n_queries = 5000
    _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=len(y))
    return (y_adv == y).numpy()


def clean_flags(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).numpy()


@pytest.fixture(scope="module")
def model(_trained_smallcnn_master):
    return _trained_smallcnn_master


@pytest.fixture(scope="module")
def data(mnist_test_first64):
    x, y = mnist_test_first64
    return x[:N], y[:N]


@pytest.fixture(scope="module")
def direct_fast(model, data):
    x, y = data
    return direct_flags(model, x, y, norm="Linf", eps=EPS, version="custom", seed=SEED, attacks=["apgd-ce", "apgd-t"])


@pytest.fixture(scope="module")
def ours_fast(model, data):
    x, y = data
    return autoattack_flags(model, x, y, norm="Linf", eps=EPS, version="fast", attacks=(), seed=SEED, device="cpu",
                            batch_size=N)


def test_fast_flags_equal_direct_pyautoattack_custom_apgd_ce_apgd_t(ours_fast, direct_fast, model, data):
    assert ours_fast.dtype == bool and ours_fast.shape == (N,)
    np.testing.assert_array_equal(ours_fast, direct_fast)
    clean = clean_flags(model, *data)
    assert clean.sum() >= N - 4, "the trained SmallCNN should classify nearly all of the first 32 test images"
    assert ours_fast.sum() < clean.sum(), "at eps 0.2 the attack must break some correctly classified points"


def test_flags_are_worst_case_robust_implies_clean(ours_fast, direct_fast, model, data):
    clean = clean_flags(model, *data)
    assert not np.any(ours_fast & ~clean)
    assert not np.any(direct_fast & ~clean)


def test_evaluate_autoattack_metric_equals_direct_pyautoattack(model, data, direct_fast, tmp_path, as_loaded):
    options = AutoAttackMetric.options_from({"aa_version": "fast"})
    config = EvalConfig(model="mnist-smallcnn", dataset=Dataset.MNIST, threat_model=ThreatModel.LINF, eps=EPS,
                        n_examples=N, metrics=("clean", "autoattack"), metric_options={"autoattack": options},
                        batch_size=N, seed=SEED, records=str(tmp_path))
    result = evaluate(config, model=as_loaded(model))
    per_example = load_per_example(tmp_path, result.record["record_id"])
    np.testing.assert_array_equal(per_example["autoattack"], direct_fast)
    np.testing.assert_array_equal(per_example["clean"], clean_flags(model, *data))
    assert not np.any(per_example["autoattack"] & ~per_example["clean"])
    aa = result.record["metrics"]["autoattack_acc"]
    assert aa["value"] == pytest.approx(100.0 * direct_fast.sum() / N)
    assert aa["n"] == N and aa["lo"] <= aa["value"] <= aa["hi"]
    assert result.record["labels"]["aa_version"] == "fast"


def test_standard_flags_equal_direct_pyautoattack_standard_on_a_few_points(model, data, ours_fast):
    """``standard`` (apgd-ce, apgd-t, fab-t, square) on 3 points: one that survives the fast attacks
    (so FAB-T and Square run on it) when there is one, and two that do not."""
    x, y = data
    clean = clean_flags(model, x, y)
    robust = list(np.flatnonzero(ours_fast))[:1]
    broken = list(np.flatnonzero(clean & ~ours_fast))[:3 - len(robust)]
    idx = torch.tensor(sorted(robust + broken))
    xs, ys = x[idx], y[idx]
    ours = autoattack_flags(model, xs, ys, norm="Linf", eps=EPS, version="standard", attacks=(), seed=SEED,
                            device="cpu", batch_size=len(idx))
    direct = direct_flags(model, xs, ys, norm="Linf", eps=EPS, version="standard", seed=SEED)
    np.testing.assert_array_equal(ours, direct)
    assert not np.any(ours & ~clean[idx.numpy()])


def test_custom_l2_flags_equal_direct_pyautoattack(model, data):
    x, y = data[0][:8], data[1][:8]
    ours = autoattack_flags(model, x, y, norm="L2", eps=2.0, version="custom", attacks=("apgd-ce", "apgd-dlr"),
                            seed=SEED, device="cpu", batch_size=8)
    direct = direct_flags(model, x, y, norm="L2", eps=2.0, version="custom", seed=SEED, attacks=["apgd-ce", "apgd-dlr"])
    np.testing.assert_array_equal(ours, direct)


def test_caller_rng_state_is_unchanged_by_our_autoattack(model, data):
    """pyautoattack re-seeds the global torch RNG (proved by the direct call below); ours contains it."""
    x, y = data[0][:4], data[1][:4]
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    autoattack_flags(model, x, y, norm="Linf", eps=0.3, version="fast", attacks=(), seed=SEED, device="cpu",
                     batch_size=4)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state

    direct_flags(model, x, y, norm="Linf", eps=0.3, version="custom", seed=SEED, attacks=["apgd-ce"])
    assert not torch.equal(torch.get_rng_state(), torch_state), "pyautoattack itself does re-seed the global RNG"


def test_evaluate_leaves_caller_rng_state_unchanged(model, tmp_path, as_loaded):
    torch.manual_seed(99)
    state = torch.get_rng_state()
    config = EvalConfig(model="mnist-smallcnn", dataset=Dataset.MNIST, threat_model=ThreatModel.LINF, eps=0.3,
                        n_examples=4, metrics=("clean", "autoattack"),
                        metric_options={"autoattack": AutoAttackMetric.options_from({"aa_version": "fast"})},
                        batch_size=4, records=str(tmp_path))
    evaluate(config, model=as_loaded(model))
    assert torch.equal(torch.get_rng_state(), state)
