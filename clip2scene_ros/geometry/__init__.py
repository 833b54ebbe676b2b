"""Geometry shared by training and the online node: transforms, calibration, projection, pairing,
sweep registration and grid grouping (numpy only, ROS-free, array in / array out)."""

from clip2scene_ros.geometry.calibration import (
    kitti_camera_from_velodyne,
    kitti_intrinsics,
    nuscenes_camera_from_lidar,
    nuscenes_record_transform,
    read_kitti_calib,
)
from clip2scene_ros.geometry.grids import grid_groups
from clip2scene_ros.geometry.projection import (
    CameraModel,
    PointPixelPairs,
    depth_image_visibility,
    in_image_mask,
    pair_points_with_cameras,
    pixel_indices,
    project_points,
    zbuffer_visibility,
)
from clip2scene_ros.geometry.sweeps import register_sweep, remove_ego_points, sweep_to_key_transform
from clip2scene_ros.geometry.transforms import (
    compose,
    invert_transform,
    make_transform,
    quaternion_to_matrix,
    transform_points,
)

__all__ = [
    "CameraModel",
    "PointPixelPairs",
    "compose",
    "depth_image_visibility",
    "grid_groups",
    "in_image_mask",
    "invert_transform",
    "kitti_camera_from_velodyne",
    "kitti_intrinsics",
    "make_transform",
    "nuscenes_camera_from_lidar",
    "nuscenes_record_transform",
    "pair_points_with_cameras",
    "pixel_indices",
    "project_points",
    "quaternion_to_matrix",
    "read_kitti_calib",
    "register_sweep",
    "remove_ego_points",
    "sweep_to_key_transform",
    "transform_points",
    "zbuffer_visibility",
]
