"""Sweep registration: bring earlier LiDAR sweeps into the key frame through ego poses.

nuScenes-style chain: sweep LiDAR -> ego(t_sweep) -> global -> ego(t_key) -> key LiDAR.
"""

from __future__ import annotations

import numpy as np

from clip2scene_ros.geometry.transforms import compose, invert_transform, transform_points

__all__ = ["sweep_to_key_transform", "register_sweep", "remove_ego_points"]


def sweep_to_key_transform(
    global_from_ego_sweep: np.ndarray,
    ego_from_lidar_sweep: np.ndarray,
    global_from_ego_key: np.ndarray,
    ego_from_lidar_key: np.ndarray,
) -> np.ndarray:
    """4x4 transform mapping sweep-LiDAR coordinates to key-frame-LiDAR coordinates."""
    return compose(
        invert_transform(ego_from_lidar_key),
        invert_transform(global_from_ego_key),
        global_from_ego_sweep,
        ego_from_lidar_sweep,
    )


def register_sweep(
    points: np.ndarray,
    global_from_ego_sweep: np.ndarray,
    ego_from_lidar_sweep: np.ndarray,
    global_from_ego_key: np.ndarray,
    ego_from_lidar_key: np.ndarray,
) -> np.ndarray:
    """Points [P, 3+F] of a sweep expressed in the key frame's LiDAR frame (features unchanged)."""
    T = sweep_to_key_transform(
        global_from_ego_sweep, ego_from_lidar_sweep, global_from_ego_key, ego_from_lidar_key
    )
    return transform_points(T, points)


def remove_ego_points(points: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """Boolean mask of points farther than ``radius`` (x-y distance) from the sensor: the car's own
    roof and body returns are removed before pairing (as the upstream sweep loader does)."""
    pts = np.asarray(points)
    return np.hypot(pts[:, 0], pts[:, 1]) > radius
