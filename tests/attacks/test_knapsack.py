"""The fractional knapsack worst case: hand examples, an LP / subset brute force, monotonicity, p = inf."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linprog

from wdro_finetune.attacks.knapsack import knapsack_accuracy, knapsack_weights


def test_hand_example_fractional_and_integral():
    # 5 points: one misclassified (d = 0), distances 0.1, 0.2, 0.3 and one never flipped (inf).
    d = np.array([0.0, 0.1, 0.2, 0.3, np.inf])
    # delta^2 * N = 0.25: costs 0.01 + 0.04 + 0.09 = 0.14 fit: three whole flips; the inf point never flips.
    r = knapsack_accuracy(d, [math.sqrt(0.05)], p=2)
    assert r.n_correct == 4 and r.flips[0] == pytest.approx(3.0) and r.accuracy[0] == pytest.approx(20.0)
    # budget 5 * 0.01 = 0.05: 0.01 + 0.04 exactly spent -> 2 whole flips, no fraction.
    r = knapsack_accuracy(d, [0.1], p=2)
    assert r.flips[0] == pytest.approx(2.0) and r.accuracy[0] == pytest.approx(40.0)
    # budget 5 * 0.004 = 0.02: 0.01 spent on the first, 0.01 / 0.04 = 1/4 of the second.
    r = knapsack_accuracy(d, [math.sqrt(0.004)], p=2)
    assert r.flips[0] == pytest.approx(1.25) and r.accuracy[0] == pytest.approx(100 * (4 - 1.25) / 5)
    assert r.flips_int[0] == 1 and r.accuracy_int[0] == pytest.approx(60.0)


def test_zero_budget_is_clean_accuracy_and_misclassified_count_as_distance_zero():
    d = np.array([0.0, 0.0, 0.5, 0.7])
    r = knapsack_accuracy(d, [0.0], p=2)
    assert r.accuracy[0] == pytest.approx(50.0) and r.accuracy_int[0] == pytest.approx(50.0)


def test_p_inf_equals_pointwise_robust_accuracy():
    rng = np.random.default_rng(0)
    d = np.where(rng.random(200) < 0.1, 0.0, rng.exponential(0.2, 200))
    d[rng.random(200) < 0.05] = np.inf
    eps = np.linspace(0, 1, 21)
    r = knapsack_accuracy(d, eps, p=math.inf)
    pointwise = [100 * np.mean(d > e) for e in eps]
    np.testing.assert_allclose(r.accuracy, pointwise)


def _lp_worst_case(d: np.ndarray, delta: float, p: float) -> float:
    """Minimise mean(correct * (1 - alpha)) s.t. mean(alpha * d^p) <= delta^p by linear programming."""
    correct = d > 0
    finite = np.where(np.isfinite(d), d, 0.0)
    bounds = [(0, 1) if c and np.isfinite(v) else (0, 0) for c, v in zip(correct, d)]
    res = linprog(-correct.astype(float), A_ub=[finite**p], b_ub=[d.size * delta**p], bounds=bounds)
    return 100 * (correct.sum() + res.fun) / d.size


def _subset_worst_case(d: np.ndarray, delta: float, p: float) -> float:
    """Integral variant by trying every subset of points to flip."""
    best = int((d > 0).sum())
    idx = [i for i in range(d.size) if d[i] > 0 and np.isfinite(d[i])]
    for k in range(len(idx) + 1):
        for subset in itertools.combinations(idx, k):
            if sum(d[i] ** p for i in subset) <= d.size * delta**p * (1 + 1e-12):
                best = min(best, int((d > 0).sum()) - k)
    return 100 * best / d.size


distance = st.one_of(st.just(0.0), st.just(math.inf), st.floats(0.01, 1.0))


@settings(max_examples=60, deadline=None)
@given(d=st.lists(distance, min_size=1, max_size=7), delta=st.floats(0.0, 0.8), p=st.sampled_from([1.0, 2.0, 3.0]))
def test_knapsack_equals_lp_and_subset_brute_force(d, delta, p):
    d = np.array(d)
    r = knapsack_accuracy(d, [delta], p=p)
    assert r.accuracy[0] == pytest.approx(_lp_worst_case(d, delta, p), abs=1e-6)
    assert r.accuracy_int[0] == pytest.approx(_subset_worst_case(d, delta, p), abs=1e-9)
    alpha = knapsack_weights(d, delta, p)
    assert np.all((alpha >= 0) & (alpha <= 1)) and np.all(alpha[d == 0] == 0)
    finite = np.where(np.isfinite(d), d, 0.0)
    assert np.mean(alpha * finite**p) <= delta**p * (1 + 1e-9) + 1e-15
    assert 100 * ((d > 0).sum() - alpha.sum()) / d.size == pytest.approx(r.accuracy[0], abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(d=st.lists(distance, min_size=1, max_size=40), p=st.sampled_from([1.0, 2.0, math.inf]))
def test_accuracy_is_non_increasing_in_delta_and_integral_is_above_fractional(d, p):
    r = knapsack_accuracy(np.array(d), np.linspace(0, 1.2, 49), p=p)
    assert np.all(np.diff(r.accuracy) <= 1e-9) and np.all(np.diff(r.accuracy_int) <= 1e-9)
    assert np.all(r.accuracy_int >= r.accuracy - 1e-9)


@pytest.mark.parametrize("d, deltas", [([0.1, -0.2], [0.1]), ([np.nan], [0.1]), ([0.1], [-0.5]), ([0.1], [np.inf])])
def test_bad_input_is_refused(d, deltas):
    with pytest.raises(ValueError):
        knapsack_accuracy(np.array(d), deltas)
