"""Metrics and class mapping with hand-computed answers (no ROS, no models)."""

from __future__ import annotations

import numpy as np
import pytest

from clip2scene_ros.evaluation.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    iou_from_confusion,
    latency_summary,
    resolve_label_mapping,
)


def test_confusion_and_iou_by_hand():
    c = ConfusionMatrix(["a", "b", "c"])
    # gt:   a  b  b  b  ign ign ; pred: a  a  b  none c  b
    c.update(np.array([1, 1, 2, 0, 3, 2]), np.array([1, 2, 2, 2, 0, 0]))
    # a: tp 1, gt 1, predicted a on labelled points 2 -> 1/2; b: tp 1, gt 3, pred 1 -> 1/3; c absent
    np.testing.assert_allclose(c.iou()[:2], [0.5, 1 / 3])
    assert np.isnan(c.iou()[2])
    assert c.miou() == pytest.approx((0.5 + 1 / 3) / 2)
    d = c.to_dict()
    assert d["points_evaluated"] == 4 and d["accuracy"] == 50.0 and d["per_class_iou"]["c"] is None
    # ids outside the taxonomy are ignored (gt) or misses (pred)
    c2 = ConfusionMatrix(["a", "b", "c"])
    c2.update(np.array([7, 1]), np.array([1, 9]))
    assert c2.matrix[1, 0] == 1 and c2.matrix[1:].sum() == 1 and c2.to_dict()["points_evaluated"] == 1
    with pytest.raises(ValueError, match="point order"):
        c.update(np.zeros(3), np.zeros(4))


def test_label_mapping_identity_classmap_names_and_error():
    from clip2scene_ros.sim.taxonomy import CLASS_NAMES, map_labels

    synth = [(i, n) for i, n in enumerate(CLASS_NAMES) if i > 0]
    ident = resolve_label_mapping("synthetic", synth, "synthetic")
    assert ident.how.startswith("identity") and ident(np.array([0, 3, 15])).tolist() == [0, 3, 15]
    to_nu = resolve_label_mapping("synthetic", synth, "nuscenes16")
    ids = np.arange(16)
    np.testing.assert_array_equal(to_nu(ids), map_labels(ids, "synthetic_to_nuscenes16"))
    assert len(to_nu.gt_names) == 16 and "class map" in to_nu.how
    runtime = resolve_label_mapping("runtime", [(1, "car"), (2, "tree"), (3, "Road")], "synthetic")
    assert runtime(np.array([1, 2, 3])).tolist() == [6, 0, 1] and "by class name" in runtime.how
    with pytest.raises(ValueError, match="--class-map"):
        resolve_label_mapping("runtime", [(1, "spaceship")], "synthetic")


def test_latency_summary():
    s = latency_summary([10.0, 20.0, 30.0, 40.0])
    assert s["count"] == 4 and s["p50"] == 25.0 and s["max"] == 40.0
    assert latency_summary([]) == {"count": 0}


def test_iou_hand_computed():
    gt = np.array([1, 1, 1, 2, 2, 0, 0, 3])
    pred = np.array([1, 1, 2, 2, 0, 1, 3, 3])
    conf = confusion_matrix(pred, gt, 3)
    assert conf.sum() == 8 and conf[0].sum() == 2  # ignored ground truth is kept in row 0
    iou, miou = iou_from_confusion(conf)
    # class 1: tp 2, gt 3, pred 2 -> 2/3; class 2: tp 1, gt 2, pred 2 -> 1/3; class 3: tp 1, gt 1, pred 1 -> 1.
    np.testing.assert_allclose(iou, [2 / 3, 1 / 3, 1.0])
    assert miou == pytest.approx(100 * (2 / 3 + 1 / 3 + 1) / 3)
    iou, _ = iou_from_confusion(confusion_matrix(np.array([1, 1]), np.array([1, 1]), 3))
    assert iou[0] == 1.0 and np.isnan(iou[1:]).all()  # absent classes do not count
    with pytest.raises(ValueError, match="ground-truth ids"):
        confusion_matrix(np.array([1]), np.array([7]), 3)
