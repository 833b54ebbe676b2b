"""The models' base frame: poses, the legacy LIDAR_TOP frame, and dataset adapters brought into it."""

from __future__ import annotations

import numpy as np
import pytest

from clip2scene_ros.geometry import (
    ModelFrame,
    as_transform,
    matrix_to_pose,
    matrix_to_quaternion,
    pose_to_matrix,
    quaternion_to_matrix,
    to_base,
)
from clip2scene_ros.geometry.frames import KITTI_VELODYNE_POSE, SIM_LIDAR_TOP_POSE


def test_pose_matrix_round_trip_and_rep103_angles():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pose = np.concatenate([rng.uniform(-5, 5, 3), rng.uniform(-3, 3, 3)])
        pose[4] = rng.uniform(-1.5, 1.5)  # away from gimbal lock
        T = pose_to_matrix(pose)
        np.testing.assert_allclose(pose_to_matrix(matrix_to_pose(T)), T, atol=1e-12)
        q = matrix_to_quaternion(T)
        assert q[0] >= 0
        np.testing.assert_allclose(quaternion_to_matrix(q), T[:3, :3], atol=1e-12)
    # yaw +90 deg turns x (forward) into y (left); pitch +90 deg turns x into -z (nose down, REP-103)
    np.testing.assert_allclose(pose_to_matrix([0, 0, 0, 0, 0, np.pi / 2])[:3, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(pose_to_matrix([0, 0, 0, 0, np.pi / 2, 0])[:3, 0], [0, 0, -1], atol=1e-12)
    with pytest.raises(ValueError, match="6 finite numbers"):
        pose_to_matrix([0, 0, 1])
    with pytest.raises(ValueError, match="not a rotation"):
        as_transform(np.diag([2.0, 1, 1, 1]))


def test_legacy_checkpoints_read_the_simulators_lidar_top_frame():
    legacy = ModelFrame.from_dict(None)
    assert legacy == ModelFrame.lidar_top() == ModelFrame.from_dict({"name": "lidar_top", "mount": [0.94, 0, 1.84]})
    assert ModelFrame.from_dict(legacy.to_dict()) == legacy
    assert ModelFrame.from_dict(ModelFrame.base().to_dict()) == ModelFrame.base()
    # what pre-training writes into extra["frame"] for a base-frame student
    assert ModelFrame.from_dict({"name": "base_link", "convention": "REP-103"}) == ModelFrame.base()
    custom = ModelFrame.from_dict({"name": "roof", "base_from_model_pose": [0, 0, 2.0, 0, 0, 0]})
    np.testing.assert_allclose(custom.to_model(np.array([[1.0, 0, 0]]), np.eye(4)), [[1, 0, -2]])
    with pytest.raises(ValueError, match="base_from_model_pose"):
        ModelFrame.from_dict({"name": "odd"})
    # a point on the road 10 m ahead of a KITTI car: base frame z = 0; LIDAR_TOP: y forward, 1.84 m down
    p = np.array([[10.0, 0.0, -1.73, 0.4]], np.float32)
    base = to_base(p, KITTI_VELODYNE_POSE)
    np.testing.assert_allclose(base, [[10, 0, 0, 0.4]], atol=1e-5)
    top = legacy.to_model(p, KITTI_VELODYNE_POSE)
    np.testing.assert_allclose(top, [[0, 10 - SIM_LIDAR_TOP_POSE[0], -SIM_LIDAR_TOP_POSE[2], 0.4]], atol=1e-5)
    assert top.dtype == np.float32
    # a cloud already in the model's frame is returned as it is
    assert legacy.to_model(p, SIM_LIDAR_TOP_POSE) is p


def _ground_z(points: np.ndarray, radius: float = 12.0) -> float:
    """Median height of the lowest tenth of the points near the sensor (the road around the car)."""
    near = points[np.hypot(points[:, 0], points[:, 1]) < radius]
    z = np.sort(near[:, 2])
    return float(np.median(z[: max(1, len(z) // 10)]))


@pytest.mark.real_data
def test_real_nuscenes_and_kitti_come_into_the_base_frame(real_data, tmp_path):
    from clip2scene_ros.datasets import create_dataset

    nusc = dict(root=real_data / "nuscenes-sample", version="v1.0-mini", pairing={"occlusion": "none"})
    lidar, base = (create_dataset("nuscenes", frame=f, **nusc)[0] for f in ("lidar", "base_link"))
    assert abs(_ground_z(base.points)) < 0.3 < abs(_ground_z(lidar.points))
    assert base.points.shape == lidar.points.shape and np.array_equal(base.points[:, 3], lidar.points[:, 3])
    # LIDAR_TOP's y axis is the car's forward axis: base x = lidar y (up to the mount offset)
    assert np.corrcoef(base.points[:, 0], lidar.points[:, 1])[0, 1] > 0.999
    # the same points pair with the same pixels whichever frame they are in
    assert np.array_equal(base.pairs.point_index, lidar.pairs.point_index)
    np.testing.assert_allclose(base.pairs.uv, lidar.pairs.uv, atol=1e-2)

    src = real_data / "kitti-frame" / "training"
    seq = tmp_path / "sequences" / "00"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "velodyne" / "000001.bin").symlink_to(src / "velodyne" / "000001.bin")
    kitti = create_dataset("semantickitti", root=tmp_path, sequences=["00"], frame="base_link")[0]
    assert abs(_ground_z(kitti.points)) < 0.3
    with pytest.raises(ValueError, match="frame must be one of"):
        create_dataset("semantickitti", root=tmp_path, sequences=["00"], frame="map")


def test_synthetic_samples_come_into_the_base_frame():
    from clip2scene_ros.datasets import create_dataset
    from clip2scene_ros.sim import SimConfig

    sim = SimConfig.default().with_overrides(**{"lidar.points_per_ring": 360})
    opts = dict(split="train", num_scenes=1, key_frames_per_scene=1, sim_config=sim, render_cameras=False)
    lidar, base = (create_dataset("synthetic", frame=f, **opts)[0] for f in ("lidar", "base_link"))
    assert abs(_ground_z(base.points)) < 0.2 and abs(_ground_z(lidar.points) + SIM_LIDAR_TOP_POSE[2]) < 0.2
    np.testing.assert_allclose(base.points, ModelFrame.base().to_model(lidar.points, SIM_LIDAR_TOP_POSE), atol=1e-4)
