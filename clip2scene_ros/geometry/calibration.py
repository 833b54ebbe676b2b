"""Calibration readers: KITTI calib files and nuScenes calibrated_sensor / ego_pose records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clip2scene_ros.geometry.transforms import compose, invert_transform, make_transform

__all__ = [
    "read_kitti_calib",
    "kitti_camera_from_velodyne",
    "kitti_intrinsics",
    "nuscenes_record_transform",
    "nuscenes_camera_from_lidar",
]


def read_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a KITTI calib file (object ``calib/*.txt`` or odometry ``calib.txt``) into flat arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"KITTI calibration file not found: {path}")
    out: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        if ":" not in line:
            continue
        key, values = line.split(":", 1)
        try:
            out[key.strip()] = np.array(values.split(), dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: cannot parse calibration entry {key!r}: {exc}") from exc
    return out


def _pad4(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def kitti_camera_from_velodyne(calib: dict[str, np.ndarray], camera: int = 2) -> np.ndarray:
    """4x4 transform velodyne -> rectified camera ``camera`` (metric, optical axes).

    P_i = K [I | t_i] in the rectified frame, so the camera-i optical frame is the rectified frame
    shifted by t_i = K^-1 P_i[:, 3]. Object calib files carry R0_rect; odometry files (already
    rectified) do not, and ``Tr`` is named ``Tr`` instead of ``Tr_velo_to_cam``.
    """
    tr_key = "Tr_velo_to_cam" if "Tr_velo_to_cam" in calib else "Tr"
    if tr_key not in calib or f"P{camera}" not in calib:
        raise KeyError(f"calibration lacks {tr_key!r} or 'P{camera}' (keys: {sorted(calib)})")
    tr = _pad4(calib[tr_key].reshape(3, 4))
    r0 = _pad4(calib["R0_rect"].reshape(3, 3)) if "R0_rect" in calib else np.eye(4)
    P = calib[f"P{camera}"].reshape(3, 4)
    K = P[:, :3]
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(K, P[:, 3])
    return shift @ r0 @ tr


def kitti_intrinsics(calib: dict[str, np.ndarray], camera: int = 2) -> np.ndarray:
    """3x3 intrinsics of rectified camera ``camera`` (left block of P_i)."""
    return calib[f"P{camera}"].reshape(3, 4)[:, :3].copy()


def nuscenes_record_transform(record: dict[str, Any]) -> np.ndarray:
    """4x4 transform of a nuScenes ``calibrated_sensor`` (ego <- sensor) or ``ego_pose`` (global <- ego)."""
    return make_transform(record["rotation"], record["translation"])


def nuscenes_camera_from_lidar(lidar_cs: dict, lidar_pose: dict, cam_cs: dict, cam_pose: dict) -> np.ndarray:
    """The devkit's 5-step chain as one matrix: lidar -> ego(t_lidar) -> global -> ego(t_cam) -> camera."""
    return compose(
        invert_transform(nuscenes_record_transform(cam_cs)),
        invert_transform(nuscenes_record_transform(cam_pose)),
        nuscenes_record_transform(lidar_pose),
        nuscenes_record_transform(lidar_cs),
    )
