"""Hostile clouds never lose a frame: points beyond the voxel hash range, voxel counts outside an
engine's profile. Real (tiny, random-weight) models through the Segmenter."""

from __future__ import annotations

import numpy as np
import pytest
from support.clouds import random_cloud

from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from support.node_harness import make_test_models

    return make_test_models(tmp_path_factory.mktemp("robust_models"))


@pytest.fixture(scope="module")
def segmenter(models) -> Segmenter:
    cfg = SegmenterConfig(checkpoint=models["checkpoint"], teacher=models["teacher"] or None, vocabulary=["a", "b"])
    return Segmenter.from_config(cfg)


def test_default_range_max_is_finite(models):
    assert 100 <= SegmenterConfig(checkpoint=models["checkpoint"]).range_max <= 300


def test_points_beyond_the_voxel_hash_range_are_dropped_and_counted(segmenter):
    pts = random_cloud()
    ref = segmenter.segment(pts)
    pts[[3, 10, 11], 0] = [1e7, -5e6, 3e38]  # far beyond +-13 km at 0.1 m voxels
    pts[12, 2] = 2e6
    segmenter.range_max = 0.0  # unlimited range: only the hash range guards the voxelizer
    try:
        r = segmenter.segment(pts)
    finally:
        segmenter.range_max = 200.0
    assert r.num_unhashable == 4 and r.num_invalid == 0
    assert (r.labels[[3, 10, 11, 12]] == 0).all()
    keep = np.setdiff1d(np.arange(len(pts)), [3, 10, 11, 12])
    assert (r.labels[keep] > 0).all()
    # the other points' voxels are unchanged, so their labels are too
    assert (r.labels[keep] == ref.labels[keep]).mean() > 0.99
    # with the default range_max they are simply out of range
    r2 = segmenter.segment(pts)
    assert r2.num_out_of_range == 4 and r2.num_unhashable == 0


def test_voxel_counts_outside_the_engine_profile_keep_the_frame(segmenter):
    backend = segmenter.backend
    pts = random_cloud(4000, seed=2)
    full = segmenter.segment(pts)
    num_voxels = len(full.features)
    try:
        backend.voxel_limits = (1, num_voxels // 2)  # too many voxels: a subset is segmented
        r = segmenter.segment(pts)
        assert r.num_over_capacity > 0 and len(r.features) == num_voxels // 2
        done = r.labels > 0
        assert done.sum() == len(pts) - r.num_over_capacity
        small = pts[:20]
        ref = segmenter.segment(small)
        backend.voxel_limits = (500, 10**6)  # too few voxels: padded far away, same answer
        padded = segmenter.segment(small)
        assert padded.num_over_capacity == 0
        np.testing.assert_array_equal(padded.labels, ref.labels)
        np.testing.assert_allclose(padded.scores, ref.scores, atol=1e-4)
    finally:
        backend.voxel_limits = None
