"""Angular triplet pieces against hand computations on 2-D vectors."""

import math

import pytest
import torch

from wdro_finetune.methods.triplet import (
    AngularDistance,
    AngularTripletRegularizer,
    BatchHardMiner,
    NegativePool,
    RandomMiner,
    SemiHardMiner,
    TripletLoss,
    angular_distance,
    feature_norm_penalty,
    pairwise_angular_distance,
)

R = 1 - 1 / math.sqrt(2)  # angular distance between vectors 45 degrees apart: 0.2928932


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_angular_distance_hand_values():
    a = t([[1, 0], [1, 0], [3, 4], [1, 0], [2, 0]])
    b = t([[1, 1], [-1, 0], [-4, 3], [-1, 1], [5, 0]])
    # cos = 1/sqrt2, -1, 0, -1/sqrt2, 1
    torch.testing.assert_close(angular_distance(a, b), t([R, 0.0, 1.0, R, 0.0]))
    torch.testing.assert_close(angular_distance(a, b, signed=True), t([R, 2.0, 1.0, 1 + 1 / math.sqrt(2), 0.0]))


def test_pairwise_angular_distance_matches_rowwise_and_hand_values():
    a = t([[1, 0], [0, 2]])
    b = t([[1, 1], [0, -1], [3, 0]])
    expected = t([[R, 1.0, 0.0], [R, 0.0, 1.0]])
    torch.testing.assert_close(pairwise_angular_distance(a, b), expected)
    for i in range(2):
        for j in range(3):
            assert AngularDistance()(a[i : i + 1], b[j : j + 1]).item() == pytest.approx(expected[i, j].item())


# Batch used below (labels 0, 1, 1):
#   h0 = (1, 0), h1 = (2, 2), h2 = (0, 3);  D(h0,h1) = R, D(h0,h2) = 1, D(h1,h2) = R
#   nearest different-class negatives: h0 -> h1 (R), h1 -> h0 (R), h2 -> h0 (1)
#   positives p0 = (0, 1), p1 = (1, 0), p2 = (1, 1):  D(h0,p0) = 1, D(h1,p1) = R, D(h2,p2) = R
#   margin 0.1: hinges = [1 - R + 0.1, R - R + 0.1, max(R - 1 + 0.1, 0)] = [0.8071068, 0.1, 0]
#   loss = 0.9071068 / 3 = 0.3023689
#   norms: |h|+|p|+|n| = [1 + 1 + sqrt8, sqrt8 + 1 + 1, 3 + sqrt2 + 1], mean = 5.0236892
H = [[1.0, 0.0], [2.0, 2.0], [0.0, 3.0]]
P = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
Y = [0, 1, 1]
LOSS = (1 - R + 0.1 + 0.1) / 3
NORM = (2 * (2 + math.sqrt(8)) + 4 + math.sqrt(2)) / 3


def test_triplet_loss_hand_computation():
    out = TripletLoss(margin=0.1)(t(H), t(P), torch.tensor(Y))
    assert out.loss.item() == pytest.approx(LOSS, abs=1e-12)
    torch.testing.assert_close(out.negative, t([H[1], H[0], H[0]]))
    assert out.valid.all()
    assert feature_norm_penalty(t(H), t(P), out.negative).item() == pytest.approx(NORM, abs=1e-12)


def test_regularizer_total_and_gradient_reaches_all_three_members():
    h = t(H).requires_grad_()
    p = t(P).requires_grad_()
    reg = AngularTripletRegularizer(weight_sa=2.0, norm_weight=1e-3, margin=0.1)
    loss, stats = reg(h, torch.tensor(Y), h_sens=p)
    assert loss.item() == pytest.approx(2 * LOSS + 1e-3 * NORM, abs=1e-12)
    assert stats["triplet_sa"].item() == pytest.approx(LOSS, abs=1e-12)
    assert stats["valid_fraction_sa"].item() == 1.0
    loss.backward()
    assert h.grad.abs().sum() > 0 and p.grad.abs().sum() > 0


def test_regularizer_sums_sensitivity_and_invariance_terms_and_checks_inputs():
    reg = AngularTripletRegularizer(weight_sa=2.0, weight_ia=0.5, norm_weight=0.0, margin=0.1)
    loss, stats = reg(t(H), torch.tensor(Y), h_sens=t(P), h_inv=t(P))
    assert loss.item() == pytest.approx(2.5 * LOSS, abs=1e-12)
    assert {"triplet_sa", "triplet_ia"} <= set(stats)
    with pytest.raises(ValueError, match="weight_ia"):
        reg(t(H), torch.tensor(Y), h_sens=t(P))


def test_batch_hard_miner_returns_nearest_different_class_pool_member():
    gen = torch.Generator().manual_seed(0)
    anchors, pool = torch.randn(12, 5, generator=gen), torch.randn(30, 5, generator=gen)
    a_labels, p_labels = torch.randint(0, 3, (12,), generator=gen), torch.randint(0, 3, (30,), generator=gen)
    index = BatchHardMiner().mine(anchors, a_labels, pool, p_labels)
    for i in range(12):
        candidates = [j for j in range(30) if p_labels[j] != a_labels[i]]
        dists = [1 - abs(torch.cosine_similarity(anchors[i], pool[j], dim=0).item()) for j in candidates]
        assert index[i].item() == candidates[min(range(len(dists)), key=dists.__getitem__)]


def test_semi_hard_miner_takes_closest_negative_beyond_positive_else_nearest():
    anchor, labels = t([[1, 0]]), torch.tensor([0])
    pool = t([[1, 0.1], [1, 0.2], [1, 1.2], [0, 1]])  # D to anchor: same class, 0.0194, 0.3598, 1
    pool_labels = torch.tensor([0, 1, 2, 1])
    near_positive = t([[1, 1]])  # D(a, p) = R = 0.2929
    assert SemiHardMiner().mine(anchor, labels, pool, pool_labels, near_positive).tolist() == [2]
    assert BatchHardMiner().mine(anchor, labels, pool, pool_labels, near_positive).tolist() == [1]
    far_positive = t([[0, 1]])  # D(a, p) = 1: no negative beyond it -> nearest
    assert SemiHardMiner().mine(anchor, labels, pool, pool_labels, far_positive).tolist() == [1]
    with pytest.raises(ValueError):
        SemiHardMiner().mine(anchor, labels, pool, pool_labels)


def test_random_miner_picks_only_different_class_members_reproducibly():
    feats = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    first = RandomMiner(torch.Generator().manual_seed(5)).mine(feats, labels, feats, labels)
    again = RandomMiner(torch.Generator().manual_seed(5)).mine(feats, labels, feats, labels)
    assert torch.equal(first, again)
    assert (labels[first] != labels).all()


def test_anchor_without_negative_is_left_out_of_the_loss():
    h = t([[1, 0], [0, 1]]).requires_grad_()
    out = TripletLoss(margin=0.1)(h, t([[0, 1], [1, 0]]), torch.tensor([3, 3]))
    assert out.valid.tolist() == [False, False]
    assert out.loss.item() == 0.0
    out.loss.backward()  # still differentiable
    assert torch.equal(h.grad, torch.zeros_like(h))


def test_pool_keeps_exactly_the_last_k_batches_detached():
    pool = NegativePool(size_in_batches=3)
    batches = [(torch.full((2, 4), float(b), requires_grad=True), torch.tensor([b, b])) for b in range(5)]
    for feats, labels in batches:
        pool.push(feats * 1, labels)
    feats, labels = pool.contents()
    assert len(pool) == 3
    assert labels.tolist() == [2, 2, 3, 3, 4, 4]
    assert feats[:, 0].tolist() == [2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    assert not feats.requires_grad
    current = torch.zeros(2, 4, requires_grad=True)
    cand_feats, cand_labels = pool.candidates(current, torch.tensor([9, 9]))
    assert cand_labels.tolist() == [9, 9, 2, 2, 3, 3, 4, 4] and cand_feats.requires_grad
    pool.clear()
    assert pool.contents() is None and len(pool) == 0


def test_regularizer_mines_from_pool_of_previous_batch_then_pushes_current():
    pool = NegativePool(size_in_batches=1)
    reg = AngularTripletRegularizer(weight_sa=1.0, norm_weight=0.0, margin=0.1, pool=pool)
    reg(t([[0, 1], [0, 1]]), torch.tensor([1, 1]), h_sens=t([[0, 1], [0, 1]]))  # no negatives in this batch
    assert len(pool) == 1
    # second batch: one class only, so its negatives must come from the stored batch (label 1, feature (0, 1))
    loss, stats = reg(t([[1, 0]]), torch.tensor([0]), h_sens=t([[1, 1]]))
    assert stats["valid_fraction_sa"].item() == 1.0
    assert stats["d_an_sa"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(0.0)  # R - 1 + 0.1 < 0
    assert pool.contents()[1].tolist() == [0]
