"""Geometry shared by training and the online node: transforms, the models' coordinate frame,
calibration, projection, pairing, sweep registration and grid grouping (numpy only, ROS-free)."""

from clip2scene_ros.geometry.calibration import (
    kitti_camera_from_velodyne,
    kitti_intrinsics,
    nuscenes_camera_from_lidar,
    nuscenes_record_transform,
    read_kitti_calib,
)
from clip2scene_ros.geometry.frames import ModelFrame, as_transform, to_base
from clip2scene_ros.geometry.grids import grid_groups
from clip2scene_ros.geometry.projection import (
    CameraModel,
    PairingConfig,
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
    matrix_to_pose,
    matrix_to_quaternion,
    pose_to_matrix,
    quaternion_to_matrix,
    rotation_rpy,
    transform_points,
)

__all__ = [
    "CameraModel",
    "ModelFrame",
    "PairingConfig",
    "PointPixelPairs",
    "as_transform",
    "matrix_to_pose",
    "matrix_to_quaternion",
    "pose_to_matrix",
    "rotation_rpy",
    "to_base",
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
