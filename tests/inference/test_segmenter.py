"""The ROS-free Segmenter on real (tiny, random-weight) models: shapes, invalid points, vocabulary,
queries, camera fusion."""

from __future__ import annotations

import numpy as np
import pytest
from support.clouds import random_cloud

from clip2scene_ros.inference.segmenter import (
    CameraInput,
    Segmenter,
    SegmenterConfig,
    group_instances,
    load_vocabulary,
    palette,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from support.node_harness import make_test_models

    return make_test_models(tmp_path_factory.mktemp("segmenter_models"))


@pytest.fixture(scope="module")
def segmenter(models) -> Segmenter:
    cfg = SegmenterConfig(checkpoint=models["checkpoint"], teacher=models["teacher"] or None, fusion=True)
    return Segmenter.from_config(cfg)


def test_segment_outputs_and_invalid_points(segmenter):
    pts = random_cloud()
    pts[:7, 1] = np.nan
    segmenter.max_points = 10_000
    r = segmenter.segment(pts)
    assert r.labels.dtype == np.uint16 and r.scores.dtype == np.float32 and len(r.labels) == len(pts)
    assert r.num_invalid == 7 and (r.labels[:7] == 0).all() and (r.labels[7:] >= 1).all()
    assert r.labels.max() <= len(segmenter.vocabulary.classes)
    assert r.unit_features().shape == (len(pts) - 7, segmenter.text_embeddings.shape[1])
    # the score is the cosine similarity to the chosen class, and the chosen class is the best one
    unit = r.unit_features()
    cos = unit @ segmenter.text_embeddings.T
    np.testing.assert_array_equal(r.labels[r.indices], segmenter.label_ids[cos.argmax(1)])
    np.testing.assert_allclose(r.scores[r.indices], cos.max(1), atol=1e-5)


def test_voxel_level_classification_equals_per_point(segmenter):
    """Classifying voxels and gathering to points gives the per-point path's labels and scores."""
    pts = random_cloud(4000, seed=5)
    voxel_path = segmenter.segment(pts)
    assert voxel_path.rows is not None and len(voxel_path.features) < len(pts)  # fewer rows than points
    backend = segmenter.backend
    segmenter.backend = lambda p: backend(p)  # a backend without voxel_outputs: per-point rows
    try:
        point_path = segmenter.segment(pts)
    finally:
        segmenter.backend = backend
    assert point_path.rows is None and len(point_path.features) == len(pts)
    np.testing.assert_array_equal(voxel_path.labels, point_path.labels)
    np.testing.assert_allclose(voxel_path.scores, point_path.scores, atol=1e-6)
    t = segmenter.encode_text(["a tall tree"])[0]
    np.testing.assert_allclose(voxel_path.similarity(t), point_path.similarity(t), atol=1e-6)


def test_range_and_max_points(segmenter):
    pts = random_cloud(4000, seed=1)
    segmenter.range_max = 10.0
    segmenter.max_points = 1000
    try:
        r = segmenter.segment(pts)
    finally:
        segmenter.range_max, segmenter.max_points = 0.0, 300_000
    far = np.linalg.norm(pts[:, :3], axis=1) > 10
    assert (r.labels[far] == 0).all() and r.num_out_of_range == int(far.sum())
    assert int((r.labels > 0).sum()) == 1000 and r.num_skipped == int((~far).sum()) - 1000


def test_empty_cloud(segmenter):
    r = segmenter.segment(np.zeros((0, 4), np.float32))
    assert r.labels.shape == (0,) and r.indices.size == 0


def test_query_similarity_matches_features(segmenter):
    pts = random_cloud(500, seed=2)
    r = segmenter.segment(pts)
    sim = segmenter.query("a parked car", r)
    t = segmenter.encode_text(["a parked car"])[0]
    np.testing.assert_allclose(sim[r.indices], r.unit_features() @ t, atol=1e-5)
    assert np.all(np.abs(sim) <= 1 + 1e-5)


def test_vocabulary_is_encoded_once_per_change(segmenter):
    before = segmenter.vocabulary_encodings
    assert not segmenter.set_vocabulary("synthetic")  # unchanged: no re-encoding
    assert segmenter.set_vocabulary(["car|sedan", "tree"])
    assert not segmenter.set_vocabulary(["car|sedan", "tree"])
    r = segmenter.segment(random_cloud(300))
    assert set(np.unique(r.labels).tolist()) <= {1, 2}
    assert segmenter.set_vocabulary("synthetic")
    assert segmenter.vocabulary_encodings == before + 2


def test_camera_fusion_changes_only_seen_points(segmenter):
    pts = random_cloud(2000, seed=3)
    K = np.array([[100.0, 0, 80], [0, 100, 48], [0, 0, 1]])
    cam_from_lidar = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    img = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    plain = segmenter.segment(pts)
    fused = segmenter.segment(pts, [CameraInput("cam_front", img, K, cam_from_lidar)])
    from clip2scene_ros.geometry import CameraModel

    # the pairs training would use: in front beyond 1 m, inside the image, not occluded (z-buffer)
    pairs = segmenter.pairing.pair(pts[:, :3], [CameraModel("cam_front", K, cam_from_lidar, 160, 96)])
    seen = pairs.seen_mask(len(pts))
    assert fused.num_fused == int(seen.sum()) > 0
    a, b = plain.unit_features(), fused.unit_features()
    changed = ~np.isclose(a, b, atol=1e-6).all(axis=1)
    np.testing.assert_array_equal(changed, seen)


def test_checkpoint_teacher_dimension_mismatch_is_explained(models, tmp_path):
    from clip2scene_ros.models import create_model, save_checkpoint

    save_checkpoint(tmp_path / "wrong", create_model("minkunet18_tiny", embed_dim=32))
    cfg = SegmenterConfig(checkpoint=str(tmp_path / "wrong"), teacher=models["teacher"] or None)
    with pytest.raises(ValueError, match="do not belong together"):
        Segmenter.from_config(cfg)


def test_config_validation_lists_every_problem(tmp_path):
    cfg = SegmenterConfig(checkpoint=str(tmp_path / "missing"), backend="tf", range_min=5, range_max=2)
    with pytest.raises(ValueError) as e:
        cfg.validate()
    msg = str(e.value)
    assert "does not exist" in msg and "backend 'tf'" in msg and "range [5, 2]" in msg


@pytest.mark.slow
def test_onnxruntime_backend_agrees_with_torch(models, segmenter):
    """The `backend` parameter reaches the exported graph; labels match the eager model."""
    cfg = SegmenterConfig(
        checkpoint=models["checkpoint"], teacher=models["teacher"] or None, backend="onnxruntime", threads=1
    )
    ort_seg = Segmenter.from_config(cfg)
    pts = random_cloud(2000, seed=5)
    a, b = segmenter.segment(pts), ort_seg.segment(pts)
    assert (a.labels == b.labels).mean() > 0.99
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)


def test_voxel_size_parameter_reaches_the_backend(models):
    cfg = SegmenterConfig(checkpoint=models["checkpoint"], teacher=models["teacher"] or None, voxel_size=0.3)
    seg = Segmenter.from_config(cfg)
    assert seg.backend.config.voxel_size == 0.3
    r = seg.segment(random_cloud(500))
    assert (r.labels > 0).all()


def test_vocabulary_head_runs_with_the_forward(segmenter):
    """The torch backend's in-forward zero-shot classifier equals the numpy reference on its features."""
    from clip2scene_ros.inference.backends import CLASS_COSINE, CLASS_INDEX, INV_NORM, classify_numpy

    head = segmenter._classifier[0]
    out, rows = segmenter.backend.voxel_outputs(random_cloud(3000, seed=9), head)
    ref = classify_numpy(out[head.head], head.text_t)
    assert out[CLASS_INDEX].shape == (len(out[head.head]),) and (rows >= 0).all()
    np.testing.assert_array_equal(out[CLASS_INDEX], ref[CLASS_INDEX])
    np.testing.assert_allclose(out[CLASS_COSINE], ref[CLASS_COSINE], atol=1e-5)
    np.testing.assert_allclose(out[INV_NORM], ref[INV_NORM], rtol=1e-5)
    empty, empty_rows = segmenter.backend.voxel_outputs(np.zeros((0, 4), np.float32), head)
    assert empty[CLASS_INDEX].shape == (0,) and empty_rows.shape == (0,)
    with pytest.raises(ValueError, match="no head 'nope'"):
        segmenter.backend.voxel_outputs(random_cloud(10), type(head)("nope", head.text_t))


# ---- helpers ---------------------------------------------------------------------------------


def test_vocabulary_file_and_runtime():
    v = load_vocabulary("synthetic")
    assert v.classes[0].name == "road" and v.ids[0] == 1 and len(v.classes) == 15
    r = load_vocabulary(["red car|crimson car", "tree"])
    assert r.classes[0].names == ("red car", "crimson car") and r.ids[1] == 2
    with pytest.raises(ValueError, match="no_such_vocab.*synthetic"):
        load_vocabulary("no_such_vocab")
    with pytest.raises(ValueError, match="empty"):
        load_vocabulary(["", " "])


def test_palette_distinct():
    p = palette(40)
    assert p.shape == (41, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p[:21]}) == 21


def test_group_instances_two_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal([0, 0, 0], 0.2, (50, 3))
    b = rng.normal([10, 0, 0], 0.2, (30, 3))
    noise = np.array([[50.0, 50, 50]])
    inst = group_instances(np.concatenate([a, b, noise]), radius=0.5, min_points=5)
    assert len(inst) == 2
    np.testing.assert_allclose(inst[0][0], (a.min(0) + a.max(0)) / 2)
    np.testing.assert_allclose(inst[1][1], b.max(0) - b.min(0))
    assert len(inst[0][2]) == 50
