"""Hand-checked geometry: transforms, projection, bounds, occlusion, sweep registration, grids."""

from __future__ import annotations

import numpy as np
import pytest

from clip2scene_ros.geometry import (
    CameraModel,
    compose,
    grid_groups,
    invert_transform,
    make_transform,
    pair_points_with_cameras,
    project_points,
    quaternion_to_matrix,
    register_sweep,
    remove_ego_points,
    transform_points,
)

# Camera looking along +x of the cloud frame (x forward, y left, z up -> optical x right, y down, z fwd).
R_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])


def _camera(depth=None):
    return CameraModel("front", K, make_transform(R_CAM_FROM_LIDAR, [0, 0, 0]), 100, 80, depth)


def test_quaternion_and_inverse():
    # 90 degrees about z.
    R = quaternion_to_matrix([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    T = make_transform([np.cos(0.3), 0.1, 0.2, np.sin(0.3)], [1, 2, 3])
    np.testing.assert_allclose(compose(T, invert_transform(T)), np.eye(4), atol=1e-12)
    pts = np.array([[1.0, 2.0, 3.0, 7.0]], dtype=np.float32)
    out = transform_points(T, pts)
    assert out.dtype == np.float32 and out[0, 3] == 7.0
    with pytest.raises(ValueError, match="zero or non-finite"):
        quaternion_to_matrix([0, 0, 0, 0])


def test_projection_known_pixels_and_bounds():
    pts = np.array([[10.0, 0.0, 0.0], [10.0, 2.0, 1.0], [-5.0, 0.0, 0.0], [0.5, 0.0, 0.0], [10.0, -6.0, 0.0]])
    uv, depth = project_points(pts, _camera().T_cam_from_points, K)
    np.testing.assert_allclose(uv[0], [50, 40])
    np.testing.assert_allclose(uv[1], [50 - 100 * 2 / 10, 40 - 100 * 1 / 10])
    assert np.isnan(uv[2]).all() and depth[2] == -5.0
    pairs = pair_points_with_cameras(pts, [_camera()], min_depth=1.0, occlusion="none")
    # Behind (2), too close (3) and outside the image (u = 110) are not paired.
    assert pairs.point_index.tolist() == [0, 1]
    assert pairs.seen_mask(5).tolist() == [True, True, False, False, False]


def test_occlusion_with_depth_image_and_zbuffer():
    # A wall 5 m away fills the image; a point behind it at 10 m is occluded, one on it is not.
    depth = np.full((80, 100), 5.0, dtype=np.float32)
    pts = np.array([[5.0, 0.0, 0.0], [10.0, 0.01, 0.0], [5.05, 1.0, 0.5]])
    pairs = pair_points_with_cameras(pts, [_camera(depth)], occlusion="auto")
    assert pairs.point_index.tolist() == [0, 2]
    # Sky (inf / 0) occludes nothing.
    sky = np.zeros((80, 100), dtype=np.float32)
    assert len(pair_points_with_cameras(pts, [_camera(sky)], occlusion="depth_image")) == 3
    # Without a depth image the cloud's own z-buffer removes the far point behind the near one.
    zb = pair_points_with_cameras(pts, [_camera()], occlusion="zbuffer")
    assert 1 not in zb.point_index.tolist() and 0 in zb.point_index.tolist()
    with pytest.raises(ValueError, match="no depth image"):
        pair_points_with_cameras(pts, [_camera()], occlusion="depth_image")
    with pytest.raises(ValueError, match="depth image is"):
        _camera(np.zeros((10, 10), np.float32))


def test_sweep_registration_through_ego_poses():
    # The ego moved 2 m forward and turned 90 degrees between the sweep and the key frame.
    lidar_to_ego = make_transform(np.eye(3), [0.9, 0.0, 1.8])
    pose_sweep = make_transform(np.eye(3), [100.0, 50.0, 0.0])
    yaw = quaternion_to_matrix([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    pose_key = make_transform(yaw, [102.0, 50.0, 0.0])
    # A static world point at global (110, 50, 1.8).
    p_global = np.array([110.0, 50.0, 1.8])
    p_sweep = p_global - np.array([100.9, 50.0, 1.8])
    out = register_sweep(
        np.r_[p_sweep, 0.5][None].astype(np.float32), pose_sweep, lidar_to_ego, pose_key, lidar_to_ego
    )
    # Key ego at (102, 50) faces +y; the point is 8 m to its right: ego (0, -8, 1.8) -> lidar (-0.9, -8, 0).
    np.testing.assert_allclose(out[0, :3], [-0.9, -8.0, 0.0], atol=1e-5)
    assert out[0, 3] == np.float32(0.5)
    assert remove_ego_points(np.array([[0.5, 0.5, 0.0], [3.0, 0.0, 0.0]])).tolist() == [False, True]


def test_grid_groups_cap():
    pts = np.array([[0.01, 0.01, 0.01], [0.02, 0.05, 0.0], [0.03, 0.0, 0.09], [0.5, 0.5, 0.5], [-0.01, 0, 0]])
    g = grid_groups(pts, 0.1)
    assert g[0] == g[1] == g[2] and len({g[0], g[3], g[4]}) == 3
    capped = grid_groups(pts, 0.1, max_per_group=2)
    assert (capped == -1).sum() == 1 and capped[2] == -1
    rng_capped = grid_groups(pts, 0.1, max_per_group=2, rng=np.random.default_rng(0))
    assert (rng_capped[:3] == -1).sum() == 1
