"""Loss values checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from clip2scene_training.losses import (
    ce_text_anchor_loss,
    classwise_nce_loss,
    direct_cosine_loss,
    grid_consistency_loss,
    lovasz_softmax,
    semantic_loss,
    spatial_temporal_loss,
)

S2 = math.sqrt(2.0)
TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
POINTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # normalised inside: p2 = (1, 1)/sqrt2
LABELS = torch.tensor([0, 1, 0])


def test_classwise_nce_paper_form():
    # tau = 0.5: class 0 scores [2, 0, sqrt2], class 1 scores [0, 2, sqrt2].
    l0 = math.log(math.exp(0)) - math.log(math.exp(2) + math.exp(S2))
    l1 = math.log(math.exp(0) + math.exp(S2)) - math.log(math.exp(2))
    got = classwise_nce_loss(POINTS, TEXT, LABELS, tau=0.5)  # the paper sums over the classes
    assert got.item() == pytest.approx(l0 + l1, abs=1e-6)
    assert classwise_nce_loss(POINTS, TEXT, LABELS, reduction="mean").item() == pytest.approx((l0 + l1) / 2, abs=1e-6)


def test_semantic_loss_reduction_option():
    total = semantic_loss("paper_classwise_nce", POINTS, TEXT, LABELS, tau=0.5)
    mean = semantic_loss("paper_classwise_nce", POINTS, TEXT, LABELS, tau=0.5, reduction="mean")
    assert total.item() == pytest.approx(2 * mean.item(), abs=1e-6)  # two pseudo-classes present
    with pytest.raises(ValueError, match="reduction must be"):
        semantic_loss("paper_classwise_nce", POINTS, TEXT, LABELS, reduction="max")


def test_classwise_nce_infonce_denominator():
    l0 = math.log(math.exp(2) + 1 + math.exp(S2)) - math.log(math.exp(2) + math.exp(S2))
    l1 = math.log(1 + math.exp(2) + math.exp(S2)) - 2
    got = classwise_nce_loss(POINTS, TEXT, LABELS, tau=0.5, denominator="all", reduction="mean")
    assert got.item() == pytest.approx((l0 + l1) / 2, abs=1e-6)


def test_classwise_nce_single_class_and_gradient():
    assert classwise_nce_loss(POINTS, TEXT, torch.zeros(3, dtype=torch.long)).item() == 0.0
    # A gradient step moves the points towards their own text anchor.
    p = torch.tensor([[0.6, 0.8], [0.7, 0.7], [0.9, 0.1]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    loss = classwise_nce_loss(p, TEXT, labels)
    loss.backward()
    with torch.no_grad():
        p2 = p - 0.1 * p.grad
    assert classwise_nce_loss(p2, TEXT, labels) < loss
    cos = torch.nn.functional.normalize(p2, dim=-1)[torch.arange(3), labels]
    assert (cos > torch.nn.functional.normalize(p.detach(), dim=-1)[torch.arange(3), labels]).all()


def test_ce_text_anchor_is_released_code_form():
    logits = POINTS @ TEXT.T  # raw point features, tau = 1
    want = -sum(torch.log_softmax(logits[i], 0)[LABELS[i]].item() for i in range(3)) / 3
    assert ce_text_anchor_loss(POINTS, TEXT, LABELS).item() == pytest.approx(want, abs=1e-6)
    assert semantic_loss("ce_text_anchor", POINTS, TEXT, LABELS, tau=1.0).item() == pytest.approx(
        want, abs=1e-6
    )
    with pytest.raises(ValueError, match="semantic loss must be one of"):
        semantic_loss("kl", POINTS, TEXT, LABELS)


def test_grid_consistency_paper_hand_computed():
    # One grid cell holding two points of class 0, with pixel features.
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0])
    groups = torch.tensor([0, 0])
    # D(x, t0) = 1, 1; D(p, t0) = 1, 0  -> weights e, e, e, 1 over Z = 3e + 1.
    e = math.e
    z = 3 * e + 1
    f = [(e + e + e) / z, 1 / z]  # a1 x1 + a2 x2 + b1 p1 + b2 p2
    d1, d2 = f[0], f[1]  # D(p1, f), D(p2, f)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = ((1 - sig(d1)) + (1 - sig(d2))) / 2
    got = grid_consistency_loss(p, x, TEXT, labels, groups, lam=1.0)
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert spatial_temporal_loss("paper_pixel_point", p, x, TEXT, labels, groups).item() == pytest.approx(
        want
    )


def test_grid_point_only_and_caps():
    p = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    # Singleton cells: the centre is the point itself -> 1 - sigmoid(1).
    single = spatial_temporal_loss("point_only", p, None, TEXT, labels, torch.tensor([0, 1, 2]))
    assert single.item() == pytest.approx(1 - 1 / (1 + math.exp(-1)), abs=1e-6)
    # Capped-out rows (-1) are ignored.
    capped = spatial_temporal_loss("point_only", p, None, TEXT, labels, torch.tensor([0, -1, -1]))
    assert capped.item() == pytest.approx(single.item(), abs=1e-6)
    # Two points in one cell: centre = softmax(D(p, t0)) weighted mean of unit p's.
    pn = torch.nn.functional.normalize(p[[0, 2]], dim=-1)
    w = torch.softmax(pn[:, 0], 0)
    c = (w[:, None] * pn).sum(0)
    want = (1 - torch.sigmoid(pn @ c)).mean()
    got = spatial_temporal_loss(
        "point_only", p[[0, 2]], None, TEXT, torch.tensor([0, 0]), torch.tensor([5, 5])
    )
    assert got.item() == pytest.approx(want.item(), abs=1e-6)


def test_direct_cosine_and_none():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert direct_cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert direct_cosine_loss(a, a.flip(1)).item() == pytest.approx(1.0, abs=1e-7)
    assert spatial_temporal_loss("none", a, None, TEXT, LABELS[:2], torch.tensor([0, 1])).item() == 0.0


def test_lovasz_equals_one_minus_iou_for_hard_predictions():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    probs = torch.nn.functional.one_hot(pred, 3).float()
    ious = []
    for c in range(3):
        inter = ((pred == c) & (labels == c)).sum().item()
        union = ((pred == c) | (labels == c)).sum().item()
        ious.append(inter / union)
    want = sum(1 - i for i in ious) / 3
    assert lovasz_softmax(probs, labels).item() == pytest.approx(want, abs=1e-6)
    assert lovasz_softmax(torch.nn.functional.one_hot(labels, 3).float(), labels).item() == 0.0
    assert lovasz_softmax(probs, torch.full((6,), 255), ignore_index=255).item() == 0.0
