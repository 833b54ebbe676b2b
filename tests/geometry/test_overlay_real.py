"""The calibration overlay on the real nuScenes key frame: the drawn points sit where the
nuscenes-devkit projects them (within 0.5 px), reached through the node's camera-input path."""

from __future__ import annotations

import numpy as np
import pytest

from clip2scene_ros.geometry import nuscenes_camera_from_lidar
from clip2scene_ros.geometry.overlay import depth_colors, draw_overlay
from clip2scene_ros.inference.camera_inputs import DecodedCamera, assemble_camera_inputs


@pytest.mark.real_data
@pytest.mark.parametrize("camera", ["CAM_FRONT", "CAM_BACK_LEFT"])
def test_overlay_pixels_match_the_devkit_projection(real_data, camera):
    devkit = pytest.importorskip("nuscenes.nuscenes")
    from PIL import Image

    root = real_data / "nuscenes-sample"
    nusc = devkit.NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    sample = nusc.sample[0]
    lidar_token, cam_token = sample["data"]["LIDAR_TOP"], sample["data"][camera]
    ref_pts, ref_depth, _ = devkit.NuScenesExplorer(nusc).map_pointcloud_to_image(lidar_token, cam_token, min_dist=1.0)

    lidar_sd, cam_sd = nusc.get("sample_data", lidar_token), nusc.get("sample_data", cam_token)
    cam_cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
    cam_from_lidar = nuscenes_camera_from_lidar(
        nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"]),
        nusc.get("ego_pose", lidar_sd["ego_pose_token"]),
        cam_cs,
        nusc.get("ego_pose", cam_sd["ego_pose_token"]),
    )
    image = np.asarray(Image.open(root / cam_sd["filename"]).convert("RGB"))
    K = np.array(cam_cs["camera_intrinsic"])
    # the node's path: an extrinsic parameter (lidar <- camera) becomes the CameraInput's pose
    inputs, skipped = assemble_camera_inputs(
        {camera: "jpeg"}, lambda cam, _item: DecodedCamera(image, K, f"{cam}_optical"), "LIDAR_TOP",
        {camera: np.linalg.inv(cam_from_lidar)}, lambda *_: None,
    )  # fmt: skip
    assert not skipped
    cam = inputs[0]
    pts = np.fromfile(root / lidar_sd["filename"], dtype=np.float32).reshape(-1, 5)[:, :3]
    ov = draw_overlay(cam.image, cam.K, cam.cam_from_lidar, pts, colors=None, min_depth=1.0, radius=0)

    # The devkit keeps 1 < u < W - 1, 1 < v < H - 1; compare those points, matched by index.
    w, h = image.shape[1], image.shape[0]
    inner = (ov.uv[:, 0] > 1) & (ov.uv[:, 0] < w - 1) & (ov.uv[:, 1] > 1) & (ov.uv[:, 1] < h - 1)
    order = np.argsort(ov.index[inner])
    uv, depth = ov.uv[inner][order], ov.depth[inner][order]
    assert len(uv) == ref_pts.shape[1] > 1000
    err = np.linalg.norm(uv - ref_pts[:2].T, axis=1)
    assert err.max() < 0.5, f"{camera}: overlay pixel differs from the devkit by {err.max():.3f} px"
    np.testing.assert_allclose(depth, ref_depth, atol=1e-3)

    # The drawn pixels carry the depth colour of the nearest point that lands on them.
    col, row = np.floor(ov.uv[:, 0]).astype(int), np.floor(ov.uv[:, 1]).astype(int)
    nearest = {}
    for i in np.argsort(ov.depth)[::-1]:  # far to near: the last write wins
        nearest[(row[i], col[i])] = i
    idx = np.array(list(nearest.values()))
    np.testing.assert_array_equal(ov.image[row[idx], col[idx]], depth_colors(ov.depth[idx]))
    assert (ov.image != image).any(axis=2).sum() >= len(idx) * 0.9
