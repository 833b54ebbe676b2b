"""Query selection (threshold / top-k / cap / instances) and camera-input assembly, without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from clip2scene_ros.inference.camera_inputs import DecodedCamera, assemble_camera_inputs
from clip2scene_ros.inference.query_selection import (
    add_instances,
    highlight_colors,
    request_problem,
    select_matches,
)


def test_threshold_keeps_only_segmented_points_best_first():
    sim = np.array([0.9, 0.1, 0.5, 0.95, 0.7], np.float32)
    sel = select_matches(sim, segmented=np.array([0, 1, 2, 4]), threshold=0.4)
    assert sel.indices.tolist() == [0, 4, 2]  # 3 is not segmented, 1 is below the threshold
    np.testing.assert_allclose(sel.scores, [0.9, 0.7, 0.5])
    assert sel.best == pytest.approx(0.9) and not sel.truncated and "similarity >= 0.400" in sel.rule


def test_top_k_wins_over_threshold_and_is_capped_by_the_segmented_count():
    sim = np.array([0.2, 0.8, 0.5, 0.9], np.float32)
    assert select_matches(sim, np.arange(4), threshold=0.99, top_k=2).indices.tolist() == [3, 1]
    assert select_matches(sim, np.array([0, 2]), top_k=10).indices.tolist() == [2, 0]


def test_max_results_truncates_and_says_so():
    sim = np.linspace(0, 1, 50, dtype=np.float32)
    sel = select_matches(sim, np.arange(50), threshold=0.0, max_results=5)
    assert sel.truncated and sel.indices.tolist() == [49, 48, 47, 46, 45]
    assert "truncated to query.max_results=5" in sel.describe("x", 50, instances=False)


def test_nothing_segmented_gives_an_empty_answer():
    sel = select_matches(np.zeros(4, np.float32), np.zeros(0, np.int64), top_k=3)
    assert len(sel.indices) == 0 and sel.best is None
    with pytest.raises(ValueError):
        select_matches(np.zeros(4, np.float32), np.arange(4), max_results=0)


def test_instances_group_the_selected_points():
    rng = np.random.default_rng(0)
    xyz = np.concatenate([rng.normal(0, 0.1, (30, 3)), rng.normal(10, 0.1, (20, 3)), [[50, 50, 0]]]).astype(np.float32)
    sim = np.ones(len(xyz), np.float32)
    sel = add_instances(select_matches(sim, np.arange(len(xyz))), xyz, radius=0.6, min_points=5)
    assert len(sel.centroids) == 2  # the lone far point is below min_points
    np.testing.assert_allclose(sorted(c[0] for c in sel.centroids), [0, 10], atol=0.1)


def test_highlight_colors_and_match_mask():
    sim = np.array([0.1, 0.9, 0.5], np.float32)
    colors, match = highlight_colors(3, sim, np.array([1, 2]))
    assert match.tolist() == [0, 1, 1]
    assert colors.tolist() == [[70, 70, 70], [255, 255, 0], [255, 0, 0]]


def test_request_problem():
    assert "empty" in request_problem("", 10, 0.0)
    assert "limit is 3" in request_problem("abcd", 3, 0.0)
    assert "finite" in request_problem("car", 10, float("nan"))
    assert request_problem("car", 10, 0.2) is None


# ---- camera inputs -------------------------------------------------------------------------------


def _decoder(frames: dict):
    def decode(cam, item):
        if item == "bad":
            raise ValueError("cannot decode")
        return DecodedCamera(np.zeros((4, 6, 3), np.uint8), np.eye(3), frames[cam])

    return decode


def test_camera_inputs_prefer_extrinsics_then_lookup_and_skip_with_reasons():
    lidar_from_a = np.eye(4)
    lidar_from_a[:3, 3] = [1, 2, 3]
    lidar_from_b = np.eye(4)
    lidar_from_b[:3, 3] = [0, 0, 5]
    lookups = []

    def lookup(target, source):
        lookups.append((target, source))
        return lidar_from_b if source == "b_optical" else None

    matched = {"a": "img", "b": "img", "c": "img", "d": "bad"}
    inputs, skipped = assemble_camera_inputs(
        matched, _decoder({"a": "a_optical", "b": "b_optical", "c": "c_optical", "d": "d"}), "lidar",
        {"a": lidar_from_a}, lookup,
    )  # fmt: skip
    assert [c.name for c in inputs] == ["a", "b"]
    np.testing.assert_allclose(inputs[0].cam_from_lidar, np.linalg.inv(lidar_from_a))
    np.testing.assert_allclose(inputs[1].cam_from_lidar, np.linalg.inv(lidar_from_b))
    assert ("lidar", "a_optical") not in lookups  # an explicit extrinsic wins over TF
    assert any("camera 'c': no transform lidar <- c_optical" in m for m in skipped)
    assert any("camera 'd': cannot decode; skipped" in m for m in skipped)
