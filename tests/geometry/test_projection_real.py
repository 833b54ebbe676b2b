"""Projection and calibration on the real nuScenes keyframe and KITTI frame (skipped when absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip2scene_ros.geometry import (
    in_image_mask,
    kitti_camera_from_velodyne,
    kitti_intrinsics,
    nuscenes_camera_from_lidar,
    pair_points_with_cameras,
    project_points,
    read_kitti_calib,
)
from clip2scene_ros.geometry.projection import CameraModel

CAMERAS = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]


def _tables(root):
    return {
        t: {r["token"]: r for r in json.loads((root / "v1.0-mini" / f"{t}.json").read_text())}
        for t in ("sample", "sample_data", "calibrated_sensor", "ego_pose")
    }


def _sample_data(tables, channel_prefix):
    sample = next(iter(tables["sample"].values()))
    by_token = tables["sample_data"]
    for sd in by_token.values():
        if sd["sample_token"] == sample["token"] and channel_prefix in sd["filename"]:
            return sd
    raise AssertionError(channel_prefix)


@pytest.mark.real_data
@pytest.mark.parametrize("camera", CAMERAS)
def test_nuscenes_projection_matches_devkit(real_data, camera):
    devkit = pytest.importorskip("nuscenes.nuscenes")
    root = real_data / "nuscenes-sample"
    nusc = devkit.NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    explorer = devkit.NuScenesExplorer(nusc)
    sample = nusc.sample[0]
    lidar_token, cam_token = sample["data"]["LIDAR_TOP"], sample["data"][camera]
    ref_pts, ref_depth, _ = explorer.map_pointcloud_to_image(lidar_token, cam_token, min_dist=1.0)

    lidar_sd, cam_sd = nusc.get("sample_data", lidar_token), nusc.get("sample_data", cam_token)
    T = nuscenes_camera_from_lidar(
        nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"]),
        nusc.get("ego_pose", lidar_sd["ego_pose_token"]),
        nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"]),
        nusc.get("ego_pose", cam_sd["ego_pose_token"]),
    )
    K = np.array(nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])["camera_intrinsic"])
    pts = np.fromfile(root / lidar_sd["filename"], dtype=np.float32).reshape(-1, 5)
    uv, depth = project_points(pts[:, :3], T, K)
    # The devkit keeps depth > 1 m and 1 < u < W-1, 1 < v < H-1: same bounds through `margin`.
    keep = in_image_mask(uv, depth, cam_sd["width"], cam_sd["height"], min_depth=1.0, margin=1.0)
    assert keep.sum() == ref_pts.shape[1] > 1000
    err = np.linalg.norm(uv[keep] - ref_pts[:2].T, axis=1)
    assert err.max() < 0.5, f"{camera}: max pixel difference {err.max():.3f}"
    assert np.abs(depth[keep] - ref_depth).max() < 1e-3

    # Pairing without occlusion test keeps exactly the in-bounds points; the z-buffer only removes.
    cam = CameraModel(camera, K, T, cam_sd["width"], cam_sd["height"])
    plain = pair_points_with_cameras(pts, [cam], min_depth=1.0, margin=1.0, occlusion="none")
    np.testing.assert_array_equal(plain.point_index, np.nonzero(keep)[0])
    occl = pair_points_with_cameras(pts, [cam], min_depth=1.0, margin=1.0, occlusion="zbuffer")
    assert 0.5 * len(plain) < len(occl) < len(plain)
    assert np.isin(occl.point_index, plain.point_index).all()


@pytest.mark.real_data
def test_nuscenes_direct_tables_without_devkit(real_data):
    """The same chain from the json tables alone: every camera sees points, and the six cameras
    together see most of the points within 30 m in front of the car's sides."""
    root = real_data / "nuscenes-sample"
    t = _tables(root)
    lidar_sd = _sample_data(t, "__LIDAR_TOP__")
    pts = np.fromfile(root / lidar_sd["filename"], dtype=np.float32).reshape(-1, 5)
    cams = []
    for name in CAMERAS:
        sd = _sample_data(t, f"__{name}__")
        cs = t["calibrated_sensor"][sd["calibrated_sensor_token"]]
        T = nuscenes_camera_from_lidar(
            t["calibrated_sensor"][lidar_sd["calibrated_sensor_token"]],
            t["ego_pose"][lidar_sd["ego_pose_token"]],
            cs,
            t["ego_pose"][sd["ego_pose_token"]],
        )
        cams.append(CameraModel(name, np.array(cs["camera_intrinsic"]), T, sd["width"], sd["height"]))
    pairs = pair_points_with_cameras(pts, cams, min_depth=1.0, margin=1.0, occlusion="none")
    counts = np.bincount(pairs.camera_index, minlength=6)
    # README table: devkit-kept counts per camera.
    expected = {
        "CAM_FRONT": 3053,
        "CAM_FRONT_RIGHT": 3076,
        "CAM_FRONT_LEFT": 3696,
        "CAM_BACK": 4820,
        "CAM_BACK_LEFT": 4089,
        "CAM_BACK_RIGHT": 3369,
    }
    assert {n: int(c) for n, c in zip(CAMERAS, counts, strict=True)} == expected
    unique = pair_points_with_cameras(
        pts, cams, min_depth=1.0, margin=1.0, occlusion="none", one_camera_per_point=True
    )
    assert len(np.unique(unique.point_index)) == len(unique) <= len(pairs)
    assert set(unique.point_index.tolist()) == set(pairs.point_index.tolist())


@pytest.mark.real_data
def test_kitti_frame_projects_as_calibrated(real_data):
    root = real_data / "kitti-frame" / "training"
    calib = read_kitti_calib(root / "calib" / "000001.txt")
    pts = np.fromfile(root / "velodyne" / "000001.bin", dtype=np.float32).reshape(-1, 4)
    T = kitti_camera_from_velodyne(calib, camera=2)
    K = kitti_intrinsics(calib, camera=2)
    uv, depth = project_points(pts[:, :3], T, K)
    # Reference: P2 @ R0_rect @ Tr_velo_to_cam straight from the file.
    P2 = calib["P2"].reshape(3, 4)
    R0 = np.eye(4)
    R0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    Tr = np.eye(4)
    Tr[:3] = calib["Tr_velo_to_cam"].reshape(3, 4)
    uvw = P2 @ R0 @ Tr @ np.c_[pts[:, :3], np.ones(len(pts))].T
    inside_ref = (
        (uvw[2] > 0.1)
        & (uvw[0] / uvw[2] >= 0)
        & (uvw[0] / uvw[2] < 1242)
        & (uvw[1] / uvw[2] >= 0)
        & (uvw[1] / uvw[2] < 375)
    )
    inside = in_image_mask(uv, depth, 1242, 375, min_depth=0.1)
    assert inside.sum() == 18630
    np.testing.assert_array_equal(inside, inside_ref)
    np.testing.assert_allclose(uv[inside], (uvw[:2] / uvw[2]).T[inside], atol=1e-6)
    assert 4.5 < depth[inside].min() < 5.0 and 76.0 < depth[inside].max() < 77.0
    # The labelled cyclist's 2D box holds projected points at its labelled distance (45.8 m).
    label = next(
        line.split()
        for line in (root / "label_2" / "000001.txt").read_text().splitlines()
        if line.startswith("Cyclist")
    )
    x1, y1, x2, y2 = map(float, label[4:8])
    in_box = inside & (uv[:, 0] >= x1) & (uv[:, 0] <= x2) & (uv[:, 1] >= y1) & (uv[:, 1] <= y2)
    assert abs(np.median(depth[in_box]) - float(label[13])) < 1.0
