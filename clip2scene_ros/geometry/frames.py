"""The coordinate frame a model reads clouds in, and bringing a cloud into it.

Models work in a gravity-aligned **base frame** (REP-103: x forward, y left, z up, the ground near
z = 0 under the vehicle), so one model serves sensors mounted at any height or yaw. A cloud
arrives in its sensor's frame; ``base_from_sensor`` (a 4x4 transform, e.g. from TF, or a pose
``x y z roll pitch yaw``) brings it into the base frame. Checkpoints record their frame in
``model.json``; checkpoints without one were trained on the simulator's LiDAR in the nuScenes
LIDAR_TOP frame (x right, y forward, z up, 1.84 m above the ground), :data:`LIDAR_TOP`, and read
clouds in that frame. Points keep their order and extra columns: labels come back per input point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clip2scene_ros.geometry.transforms import (
    compose,
    invert_transform,
    matrix_to_pose,
    pose_to_matrix,
    transform_points,
)

__all__ = [
    "BASE",
    "KITTI_VELODYNE_POSE",
    "LIDAR_TOP",
    "SIM_LIDAR_TOP_POSE",
    "ModelFrame",
    "as_transform",
    "to_base",
]

# base_from_sensor of the simulator's LiDAR = nuScenes' LIDAR_TOP calibration, rounded (ego frame =
# base frame: nuScenes' ego origin is the rear axle centre on the ground)
SIM_LIDAR_TOP_POSE = (0.943713, 0.0, 1.84023, 0.0, 0.0, -math.pi / 2)
# KITTI's Velodyne HDL-64E: axes already x forward, y left, z up, 1.73 m above the road
KITTI_VELODYNE_POSE = (0.0, 0.0, 1.73, 0.0, 0.0, 0.0)
BASE = "base_link"
LIDAR_TOP = "lidar_top"


def as_transform(pose_or_matrix: np.ndarray | Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    """A 4x4 transform from a 4x4 matrix or a pose ``(x, y, z, roll, pitch, yaw)``."""
    a = np.asarray(pose_or_matrix, dtype=np.float64)
    if a.shape == (4, 4):
        if not np.isfinite(a).all() or not np.allclose(a[3], (0, 0, 0, 1)):
            raise ValueError(f"not a rigid 4x4 transform: {a.tolist()}")
        if not np.allclose(a[:3, :3] @ a[:3, :3].T, np.eye(3), atol=1e-4):
            raise ValueError("the transform's 3x3 block is not a rotation (R @ R.T != I)")
        return a
    if a.size == 6:
        return pose_to_matrix(a)
    raise ValueError(f"expected a 4x4 transform or a pose (x, y, z, roll, pitch, yaw), got shape {a.shape}")


def to_base(points: np.ndarray, base_from_sensor) -> np.ndarray:
    """Points [P, 3+F] in a sensor frame -> the base frame (same order, extra columns kept)."""
    return transform_points(as_transform(base_from_sensor), points)


@dataclass(frozen=True)
class ModelFrame:
    """The frame a model reads clouds in: ``base_from_model`` maps it into the base frame."""

    name: str
    base_from_model: tuple[tuple[float, ...], ...]

    @classmethod
    def base(cls) -> ModelFrame:
        return cls(BASE, tuple(map(tuple, np.eye(4))))

    @classmethod
    def lidar_top(cls) -> ModelFrame:
        """The simulator's LIDAR_TOP: the frame of every checkpoint that records none."""
        return cls(LIDAR_TOP, tuple(map(tuple, pose_to_matrix(SIM_LIDAR_TOP_POSE))))

    @property
    def matrix(self) -> np.ndarray:
        return np.array(self.base_from_model, dtype=np.float64)

    def model_from(self, base_from_sensor) -> np.ndarray:
        """4x4 transform from a sensor frame (given as ``base_from_sensor``) into the model's frame."""
        return compose(invert_transform(self.matrix), as_transform(base_from_sensor))

    def to_model(self, points: np.ndarray, base_from_sensor) -> np.ndarray:
        """Points [P, 3+F] in a sensor frame -> the model's frame (same order, extra columns kept)."""
        T = self.model_from(base_from_sensor)
        return points if np.array_equal(T, np.eye(4)) else transform_points(T, points)

    def to_dict(self) -> dict:
        pose = matrix_to_pose(self.matrix)
        return {
            "name": self.name,
            "convention": "REP-103 base: x forward, y left, z up, ground at z=0" if self.name == BASE else "",
            "base_from_model_pose": [round(float(v), 6) for v in pose],
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> ModelFrame:
        """From ``model.json``; ``None`` (older checkpoints) is the simulator's LIDAR_TOP.

        ``base_link`` (or ``base``) and ``lidar_top`` name the two standard frames; any other name needs its
        ``base_from_model_pose`` (x, y, z, roll, pitch, yaw).
        """
        if not d:
            return cls.lidar_top()
        name = str(d.get("name", ""))
        if name in (BASE, "base"):
            return cls.base()
        if name == LIDAR_TOP:
            return cls.lidar_top()
        if "base_from_model_pose" not in d:
            raise ValueError(
                f"model frame {name!r} is neither '{BASE}' nor '{LIDAR_TOP}' and gives no base_from_model_pose"
            )
        return cls(name, tuple(map(tuple, pose_to_matrix(d["base_from_model_pose"]))))
