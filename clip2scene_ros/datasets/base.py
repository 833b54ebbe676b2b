"""One sample structure for every dataset, and the pairing step they share.

An adapter only reads its files into a :class:`Sample` (points in the key frame's LiDAR frame,
earlier sweeps already registered into it, cameras with ``T_cam_from_lidar``); :func:`attach_pairs`
then computes point-pixel pairs for the key frame and every sweep with the same geometry code the
online node uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clip2scene_ros.geometry import CameraModel, PointPixelPairs, pair_points_with_cameras

__all__ = ["CameraFrame", "Sweep", "Sample", "PairingConfig", "attach_pairs", "PointCloudDataset"]


@dataclass
class CameraFrame:
    name: str
    image: np.ndarray  # uint8 [H, W, 3] RGB
    K: np.ndarray  # [3, 3]
    T_cam_from_lidar: np.ndarray  # key-frame LiDAR -> camera optical frame, [4, 4]
    depth: np.ndarray | None = None  # metric depth [H, W] when the source renders one (simulator)
    labels: np.ndarray | None = None  # pixel labels [H, W] (simulator; evaluation of the teacher only)

    def model(self) -> CameraModel:
        h, w = self.image.shape[:2]
        return CameraModel(self.name, self.K, self.T_cam_from_lidar, w, h, self.depth)


@dataclass
class Sweep:
    points: np.ndarray  # float32 [P, 3+F], registered into the key frame's LiDAR frame
    time_lag: float = 0.0  # seconds before the key frame
    labels: np.ndarray | None = None  # never used for pre-training; kept for analysis
    pairs: PointPixelPairs | None = None  # with the key frame's cameras


@dataclass
class Sample:
    """One key frame. ``sweeps[0]`` is always the key frame itself (time lag 0)."""

    token: str
    dataset: str
    points: np.ndarray  # float32 [P, 3+F] (x, y, z, features...) in the key frame's LiDAR frame
    labels: np.ndarray | None  # int64 [P], dataset class ids, 0 = ignore; None when unlabelled
    cameras: list[CameraFrame] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def pairs(self) -> PointPixelPairs:
        if not self.sweeps or self.sweeps[0].pairs is None:
            raise RuntimeError("pairs not computed: call attach_pairs(sample, PairingConfig())")
        return self.sweeps[0].pairs

    def seen_mask(self) -> np.ndarray:
        return self.pairs.seen_mask(len(self.points))


@dataclass
class PairingConfig:
    min_depth: float = 1.0
    occlusion: str = "auto"  # auto: depth image when rendered, else the cloud's z-buffer
    one_camera_per_point: bool = True
    margin: float = 0.0


def attach_pairs(sample: Sample, config: PairingConfig) -> Sample:
    if not sample.sweeps:
        sample.sweeps = [Sweep(sample.points, 0.0, sample.labels)]
    cams = [c.model() for c in sample.cameras]
    for sweep in sample.sweeps:
        if not cams:
            sweep.pairs = PointPixelPairs.empty()
            continue
        sweep.pairs = pair_points_with_cameras(
            sweep.points,
            cams,
            min_depth=config.min_depth,
            margin=config.margin,
            occlusion=config.occlusion,
            one_camera_per_point=config.one_camera_per_point,
        )
    return sample


class PointCloudDataset:
    """Base class: ``len(ds)``, ``ds[i] -> Sample`` with pairs, ``class_names`` (ids 1..C)."""

    name = "base"
    class_names: list[str] = []

    def __init__(self, pairing: PairingConfig | None = None, num_sweeps: int = 1):
        if num_sweeps < 1:
            raise ValueError(f"num_sweeps must be >= 1 (1 = key frame only), got {num_sweeps}")
        self.pairing = pairing or PairingConfig()
        self.num_sweeps = num_sweeps

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range (len {len(self)})")
        return attach_pairs(self.load(index), self.pairing)
