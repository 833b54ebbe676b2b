"""The data a simulated time step produces (the cross-team ``Frame`` contract)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clip2scene_ros.sim.world import ObjectBox


@dataclass
class CameraImage:
    """One camera's render. ``K`` follows OpenCV (pixel centres at integer coordinates);
    ``depth`` is the optical-frame z distance in metres (0 where the ray hit nothing: sky)."""

    name: str  # lower-case nuScenes name, e.g. "cam_front"
    timestamp_ns: int
    image: np.ndarray  # uint8 [H,W,3] RGB
    labels: np.ndarray  # uint8 [H,W] synthetic ids (config/vocab/synthetic.yaml), 0 = sky
    depth: np.ndarray  # float32 [H,W]
    K: np.ndarray  # float64 [3,3]
    cam_to_ego: np.ndarray  # float64 [4,4] ego <- camera optical frame (x right, y down, z forward)
    instances: np.ndarray | None = None  # int32 [H,W] (0 = stuff / sky)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass
class Frame:
    """One time step: a LiDAR sweep (always) and camera images (empty on LiDAR-only frames)."""

    index: int
    timestamp_ns: int
    ego_pose: np.ndarray  # float64 [4,4] world <- ego
    lidar_to_ego: np.ndarray  # float64 [4,4] ego <- LiDAR (x right, y forward, z up as nuScenes)
    points: np.ndarray  # float32 [P,4] x, y, z, intensity (0..255) in the LiDAR frame
    labels: np.ndarray  # uint8 [P] synthetic ids
    instances: np.ndarray  # int32 [P] (0 = stuff)
    cameras: list[CameraImage] = field(default_factory=list)
    rings: np.ndarray | None = None  # uint8 [P] beam index, 0 = lowest
    objects: list[ObjectBox] = field(default_factory=list)  # thing boxes (world) at this time
    seed: int = 0

    def camera(self, name: str) -> CameraImage:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"no camera {name!r} in frame {self.index}; have {[c.name for c in self.cameras]}")
