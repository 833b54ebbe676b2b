"""One sample structure for every dataset, and the pairing step they share.

An adapter only reads its files into a :class:`Sample` (points in the key frame's LiDAR frame,
earlier sweeps already registered into it, cameras with ``T_cam_from_lidar``, and the LiDAR's
mounting as ``meta["base_from_lidar"]``); with ``frame="base_link"`` the sample is then moved into
the gravity-aligned base frame models work in (:mod:`clip2scene_ros.geometry.frames`), and
:func:`attach_pairs` computes point-pixel pairs for the key frame and every sweep with the same
geometry code the online node uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clip2scene_ros.geometry import CameraModel, PointPixelPairs, compose, invert_transform, transform_points
from clip2scene_ros.geometry.projection import PairingConfig

__all__ = ["CameraFrame", "Sweep", "Sample", "PairingConfig", "attach_pairs", "into_base_frame", "PointCloudDataset"]

# "lidar": clouds as the LiDAR records them (the frame of checkpoints that record none);
# "base_link": REP-103 base frame (x forward, y left, z up, ground at z = 0)
FRAMES = ("lidar", "base_link")


@dataclass
class CameraFrame:
    name: str
    image: np.ndarray  # uint8 [H, W, 3] RGB
    K: np.ndarray  # [3, 3]
    T_cam_from_lidar: np.ndarray  # the sample's point frame (key-frame LiDAR or base) -> camera optical, [4, 4]
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


def attach_pairs(sample: Sample, config: PairingConfig) -> Sample:
    if not sample.sweeps:
        sample.sweeps = [Sweep(sample.points, 0.0, sample.labels)]
    cams = [c.model() for c in sample.cameras]
    for sweep in sample.sweeps:
        sweep.pairs = config.pair(sweep.points, cams) if cams else PointPixelPairs.empty()
    return sample


def into_base_frame(sample: Sample) -> Sample:
    """Move points, sweeps and camera extrinsics from the LiDAR frame into the base frame."""
    if sample.meta.get("points_frame") == "base_link":
        return sample
    base_from_lidar = sample.meta.get("base_from_lidar")
    if base_from_lidar is None:
        raise ValueError(f"{sample.dataset} sample {sample.token} has no LiDAR mounting (base_from_lidar): "
                         "this dataset has no base frame; use frame='lidar'")  # fmt: skip
    T = np.asarray(base_from_lidar, dtype=np.float64)
    lidar_from_base = invert_transform(T)
    key_points = sample.points
    sample.points = transform_points(T, sample.points)
    for sweep in sample.sweeps:
        sweep.points = sample.points if sweep.points is key_points else transform_points(T, sweep.points)
    for cam in sample.cameras:
        cam.T_cam_from_lidar = compose(cam.T_cam_from_lidar, lidar_from_base)
    sample.meta["points_frame"] = "base_link"
    return sample


class PointCloudDataset:
    """Base class: ``len(ds)``, ``ds[i] -> Sample`` with pairs, ``class_names`` (ids 1..C)."""

    name = "base"
    class_names: list[str] = []

    def __init__(self, pairing: PairingConfig | None = None, num_sweeps: int = 1, frame: str = "lidar"):
        if num_sweeps < 1:
            raise ValueError(f"num_sweeps must be >= 1 (1 = key frame only), got {num_sweeps}")
        if frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
        self.pairing = pairing or PairingConfig()
        self.num_sweeps = num_sweeps
        self.frame = frame

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range (len {len(self)})")
        sample = self.load(index)
        if self.frame == "base_link":
            sample = into_base_frame(sample)
        return attach_pairs(sample, self.pairing)
