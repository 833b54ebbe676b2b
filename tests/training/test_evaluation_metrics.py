"""Cross-dataset class maps of the student evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from clip2scene_training.evaluate import load_class_map

from clip2scene_ros.datasets.labels import NUSCENES_CLASSES_16


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
