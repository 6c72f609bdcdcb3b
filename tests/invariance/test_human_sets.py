"""The packaged human-labelled invariance sets and the invariance metrics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from wdro_finetune.errors import UserError
from wdro_finetune.invariance.human_sets import (
    flip_share,
    human_agreement,
    list_human_sets,
    load_human_set,
    source_label_rate,
    target_label_rate,
)

DATA = Path(os.environ["WDRO_DATA_DIR"])  # set by tests/conftest.py
TRAMER = DATA / "tramer_invariance"
needs_data = pytest.mark.skipif(not TRAMER.exists(), reason="shared data not available")

# name -> (size, share of human labels that differ from the source label, max l_inf distance in
# 0..255 units to the source or None) from SOURCES.md and the files themselves
EXPECTED = {
    "inv_human_linf03": (100, 0.21, 76.5),
    "inv_human_linf04": (100, 0.37, 103),
    "inv_human_linf04_manual": (50, 0.88, 102),
    "inv_human_l0": (100, 0.55, None),
}


@pytest.fixture(scope="module")
def mnist_test():
    with np.load(DATA / "mnist_test.npz") as data:
        return data["x"], data["y"].astype(np.int64)


def test_all_four_sets_are_listed():
    assert list_human_sets() == tuple(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_set_loads_as_unit_float_images_with_labels_and_indices(name):
    s = load_human_set(name)
    n = EXPECTED[name][0]
    assert s.x.shape == (n, 1, 28, 28) and s.x.dtype == np.float32
    assert 0.0 <= s.x.min() and s.x.max() == 1.0
    assert s.human_label.shape == (n,) and s.human_label.dtype == np.int64
    assert set(np.unique(s.human_label)) <= set(range(10))
    assert s.source_index.shape == (n,) and 0 <= s.source_index.min() and s.source_index.max() < 10000
    assert len(s) == n


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_packaged_copy_equals_the_shared_files(name):
    stem = {"inv_human_linf03": "linf/automated_eps03", "inv_human_linf04": "linf/automated_eps04",
            "inv_human_linf04_manual": "linf/manual_eps04", "inv_human_l0": "l0/automated"}[name]
    s = load_human_set(name)
    np.testing.assert_array_equal(s.x[:, 0] * np.float32(255), np.load(TRAMER / f"{stem}.npy"))
    np.testing.assert_array_equal(s.human_label, np.load(TRAMER / f"{stem}_labels.npy"))


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_source_indices_point_at_the_source_images(name, mnist_test):
    s = load_human_set(name)
    radius = EXPECTED[name][2]
    if radius is None:  # l0: most pixels are untouched
        changed = np.abs(s.x[:, 0] * 255 - mnist_test[0][s.source_index]) > 0.5
        assert changed.mean() < 0.1
    else:
        dist = np.abs(s.x[:, 0] * 255 - mnist_test[0][s.source_index]).reshape(len(s), -1).max(1)
        np.testing.assert_allclose(dist, radius, atol=1e-3)


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_flip_share_matches_sources_md(name, mnist_test):
    s = load_human_set(name)
    share, n = flip_share(s.human_label, s.source_labels(mnist_test[1]))
    assert n == EXPECTED[name][0]
    assert share == pytest.approx(EXPECTED[name][1], abs=1e-12)


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_agreement_of_oracle_and_source_predicting_models(name, mnist_test):
    s = load_human_set(name)
    source = s.source_labels(mnist_test[1])
    assert human_agreement(s.human_label, s.human_label) == (1.0, len(s))
    agree = human_agreement(source, s.human_label)
    assert agree.share == pytest.approx(1.0 - flip_share(s.human_label, source).share, abs=1e-12)
    assert agree.n == len(s)


def test_metrics_accept_logits_and_tensors():
    logits = torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 5.0, 0.0]])
    labels = np.array([1, 0, 1, 2])
    assert human_agreement(logits, labels) == (0.5, 4)
    assert source_label_rate(logits.numpy(), labels).share == 0.5
    assert target_label_rate(torch.tensor([1, 1, 1, 1]), labels) == (0.5, 4)


def test_metrics_reject_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="shape"):
        human_agreement(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="zero"):
        flip_share(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_source_labels_needs_the_full_mnist_test_labels():
    with pytest.raises(ValueError, match="10000"):
        load_human_set("inv_human_l0").source_labels(np.zeros(100))


def test_unknown_set_is_a_user_error():
    with pytest.raises(UserError, match="inv_human_linf03"):
        load_human_set("inv_human_linf05")


def test_loaded_arrays_are_private_copies():
    first = load_human_set("inv_human_linf03")
    first.x[:] = 0.0
    assert load_human_set("inv_human_linf03").x.max() == 1.0
