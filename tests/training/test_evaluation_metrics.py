"""Confusion matrix, IoU and cross-dataset class maps."""

from __future__ import annotations

import numpy as np
import pytest
from clip2scene_training.datasets.labels import NUSCENES_CLASSES_16
from clip2scene_training.evaluate import confusion_matrix, iou_from_confusion, load_class_map


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


def test_class_map_synthetic_to_nuscenes():
    from clip2scene_ros.sim import CLASS_NAMES

    src = [n for n in CLASS_NAMES if n not in ("unlabelled", "unlabeled")]
    cmap = load_class_map("synthetic_to_nuscenes16", src, NUSCENES_CLASSES_16)
    ids = {n: i + 1 for i, n in enumerate(src)}
    got = cmap(np.array([ids["road"], ids["pole"], ids["car"], ids["barrier"], 0]))
    names = ["ignore", *NUSCENES_CLASSES_16]
    assert [names[g] for g in got] == ["driveable_surface", "manmade", "car", "barrier", "ignore"]
    with pytest.raises(FileNotFoundError, match="class map"):
        load_class_map("nope_to_nothing", src, NUSCENES_CLASSES_16)
