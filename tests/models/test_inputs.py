"""The input contract: clouds -> model points -> voxels and maps -> per-point rows, one path for all."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clip2scene_ros.geometry import ModelFrame, pose_to_matrix
from clip2scene_ros.geometry.frames import KITTI_VELODYNE_POSE, SIM_LIDAR_TOP_POSE
from clip2scene_ros.models import create_model, load_checkpoint, save_checkpoint
from clip2scene_ros.models.inputs import (
    DEFAULT_INTENSITY_SCALE,
    InputSpec,
    encode_points,
    gather_points,
    prepare_inputs,
)
from clip2scene_ros.sparse.samples import lidar_like_scene


def _cloud(n: int = 50, fields=("x", "y", "z", "intensity", "ring")) -> np.ndarray:
    arr = np.zeros(n, dtype=[(f, "<f4") for f in fields])
    rng = np.random.default_rng(0)
    for f in fields:
        arr[f] = rng.uniform(0, 255, n)
    return arr


def test_checkpoints_without_an_input_section_read_clouds_as_before(tmp_path):
    """Checkpoints written before the contract: intensity 0..255 scaled by 1/255, LIDAR_TOP frame."""
    save_checkpoint(tmp_path, create_model("minkunet18_tiny", embed_dim=8, voxel_size=0.1))
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["input"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    spec = InputSpec.from_checkpoint(tmp_path)
    assert spec.fields == ("intensity",) and spec.intensity_scale == DEFAULT_INTENSITY_SCALE
    assert spec.voxel_size == 0.1 and spec.frame == ModelFrame.lidar_top()


def test_checkpoints_record_the_contract(tmp_path):
    model = create_model("minkunet18_tiny", embed_dim=8)
    spec = InputSpec.for_model(model.config, intensity_scale=1.0, frame=ModelFrame.base())
    save_checkpoint(tmp_path / "a", model, input_spec=spec)
    assert InputSpec.from_checkpoint(tmp_path / "a") == spec
    load_checkpoint(tmp_path / "a")  # the weights load as before
    # a frame named in extra (as training writes it) is the recorded frame when no spec is given
    save_checkpoint(tmp_path / "b", model, extra={"frame": {"name": "base_link"}})
    assert InputSpec.from_checkpoint(tmp_path / "b").frame == ModelFrame.base()
    with pytest.raises(ValueError, match="column order"):
        save_checkpoint(tmp_path / "c", model, input_spec=spec.replace(fields=("ring", "intensity")))


def test_points_from_cloud_scales_intensity_and_reports_missing_fields():
    cloud = _cloud()
    pts, missing = InputSpec().points_from_cloud(cloud)
    assert pts.dtype == np.float32 and pts.shape == (50, 4) and missing == []
    np.testing.assert_allclose(pts[:, 3], cloud["intensity"] / 255, rtol=1e-6)
    np.testing.assert_array_equal(pts[:, 0], cloud["x"])
    pts, missing = InputSpec(fields=("intensity", "ring"), intensity_scale=1.0).points_from_cloud(
        _cloud(fields=("x", "y", "z", "ring"))
    )
    assert missing == ["intensity"] and (pts[:, 3] == 0).all() and pts.shape == (50, 5)
    assert InputSpec(fields=()).points_from_cloud(cloud)[0].shape == (50, 3)
    with pytest.raises(ValueError, match="no z field"):
        InputSpec().points_from_cloud(_cloud(fields=("x", "y")))
    with pytest.raises(ValueError, match="intensity_scale"):
        InputSpec(intensity_scale=0.0)


def test_to_model_frame_moves_points_and_keeps_order():
    spec = InputSpec(frame=ModelFrame.base())
    pts = np.array([[10, 0, -1.73, 0.2], [5, 1, -1.73, 0.3]], np.float32)
    assert spec.to_model_frame(pts) is pts  # no mounting given: the cloud is in the model's frame
    out = spec.to_model_frame(pts, KITTI_VELODYNE_POSE)
    np.testing.assert_allclose(out[:, 2], 0, atol=1e-6)
    np.testing.assert_array_equal(out[:, [0, 1, 3]], pts[:, [0, 1, 3]])


def test_training_and_inference_prepare_clouds_the_same_way():
    """encode_points (training, batched, differentiable) == prepare_inputs + forward + to_points (runtime)."""
    torch.manual_seed(0)
    model = create_model("minkunet18_tiny", embed_dim=8).eval()
    a = lidar_like_scene(1, beams=8, azimuth_steps=240)
    b = lidar_like_scene(2, beams=8, azimuth_steps=240)
    a[5, 0] = np.nan  # dropped by the voxelizer: zeros / row -1
    with torch.no_grad():
        batched = encode_points(model, [torch.from_numpy(a), torch.from_numpy(b)])
        prep = prepare_inputs(model.config, a)
        voxel_out = {h: v.numpy() for h, v in model(prep.feats, prep.maps).items()}
    single = prep.to_points(voxel_out, model.config.embed_dim)
    assert prep.point_rows[5] == -1 and (single["global"][5] == 0).all()
    for h in model.config.heads:
        np.testing.assert_allclose(batched[0][h].numpy(), single[h], atol=1e-5)
    assert batched[1]["global"].shape == (len(b), 8)
    assert gather_points(voxel_out, prep.point_rows, 8)["local"].shape == (len(a), 8)
    batch = prepare_inputs(model.config, [a, b])
    assert batch.sizes == (len(a), len(b)) and batch.num_voxels > prep.num_voxels


def test_segmenter_brings_clouds_into_the_model_frame(tmp_path):
    """A KITTI-mounted cloud with its mounting gives the labels of the same cloud already moved."""
    from clip2scene_ros.inference.backends import create_backend
    from clip2scene_ros.inference.segmenter import Segmenter

    model = create_model("minkunet18_tiny", embed_dim=8)
    save_checkpoint(tmp_path, model)
    backend = create_backend("torch", tmp_path)
    texts = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)

    def encode(names):
        return np.stack([texts[hash(n) % 3] for n in names])

    seg = Segmenter(backend, encode, ["road", "car", "tree"], input_spec=InputSpec.from_checkpoint(tmp_path))
    kitti = lidar_like_scene(3, beams=8, azimuth_steps=240)[:, :4].copy()
    moved = ModelFrame.lidar_top().to_model(kitti, KITTI_VELODYNE_POSE)
    direct = seg.segment(moved)
    mounted = seg.segment(kitti, base_from_sensor=pose_to_matrix(KITTI_VELODYNE_POSE))
    np.testing.assert_array_equal(mounted.labels, direct.labels)
    np.testing.assert_array_equal(mounted.scores, direct.scores)
    seg.base_from_sensor = pose_to_matrix(KITTI_VELODYNE_POSE)  # a configured lidar_pose: the default mounting
    np.testing.assert_array_equal(seg.segment(kitti).scores, direct.scores)
    # a cloud mounted like the simulator's LiDAR is already in this model's frame
    same = seg.segment(kitti, base_from_sensor=pose_to_matrix(SIM_LIDAR_TOP_POSE))
    seg.base_from_sensor = None
    np.testing.assert_array_equal(same.scores, seg.segment(kitti).scores)
    assert not np.array_equal(same.scores, direct.scores)
