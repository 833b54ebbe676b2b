"""Point clouds for tests and benchmarks: the real nuScenes/KITTI frames and LiDAR-like scenes.

The real frames are read from ``../shared/data/real`` (never copied into the repository). The
generated scene imitates a spinning LiDAR: rings on a ground plane, building facades and poles,
with range noise and an intensity channel, at a chosen beam count and azimuth resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NUSCENES_LIDAR = "nuscenes-sample/samples/LIDAR_TOP/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
KITTI_LIDAR = "kitti-frame/training/velodyne/000001.bin"


def load_real_frame(root: str | Path, name: str) -> np.ndarray:
    """``name`` = "nuscenes" (34,688 x [x, y, z, intensity]) or "kitti" (120,268 x 4), float32."""
    root = Path(root)
    if name == "nuscenes":
        pts = np.fromfile(root / NUSCENES_LIDAR, dtype=np.float32).reshape(-1, 5)[:, :4]
    elif name == "kitti":
        pts = np.fromfile(root / KITTI_LIDAR, dtype=np.float32).reshape(-1, 4)
    else:
        raise ValueError(f"unknown real frame {name!r}: use 'nuscenes' or 'kitti'")
    return np.ascontiguousarray(pts)


def lidar_like_scene(
    seed: int = 0,
    beams: int = 32,
    azimuth_steps: int = 1080,
    max_range: float = 60.0,
    sensor_height: float = 1.8,
) -> np.ndarray:
    """A synthetic spinning-LiDAR sweep [P, 4] (x, y, z, intensity), float32, deterministic by seed."""
    rng = np.random.default_rng(seed)
    elev = np.deg2rad(np.linspace(-30.0, 10.0, beams))
    azim = np.linspace(-np.pi, np.pi, azimuth_steps, endpoint=False)
    el, az = np.meshgrid(elev, azim, indexing="ij")
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    t = np.full(len(d), np.inf)
    kind = np.zeros(len(d), dtype=np.int64)
    down = d[:, 2] < -1e-3
    t[down] = sensor_height / -d[down, 2]
    # building facades: a radius per 10-degree sector.
    sector = ((np.arctan2(d[:, 1], d[:, 0]) + np.pi) / (2 * np.pi) * 36).astype(int) % 36
    radius = rng.uniform(12.0, 40.0, 36)[sector]
    horiz = np.linalg.norm(d[:, :2], axis=1)
    tw = radius / np.maximum(horiz, 1e-6)
    hw = tw * d[:, 2] + sensor_height
    wall = (hw < 12.0) & (tw < t)
    t[wall], kind[wall] = tw[wall], 1
    # poles: vertical cylinders of radius 0.15 m.
    for _ in range(25):
        c = rng.uniform(-25, 25, 2)
        oc = -c
        a = (d[:, :2] ** 2).sum(1)
        b = 2 * (d[:, :2] @ oc)
        cc = oc @ oc - 0.15**2
        disc = b * b - 4 * a * cc
        ok = disc > 0
        tp = np.where(ok, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * np.maximum(a, 1e-9)), np.inf)
        hp = tp * d[:, 2] + sensor_height
        hitp = ok & (tp > 0) & (tp < t) & (hp < 6.0)
        t[hitp], kind[hitp] = tp[hitp], 2
    keep = np.isfinite(t) & (t < max_range)
    t = t[keep] + rng.normal(0, 0.02, keep.sum())
    xyz = d[keep] * t[:, None]
    intensity = np.array([0.1, 0.4, 0.8])[kind[keep]] + rng.uniform(0, 0.1, keep.sum())
    return np.concatenate([xyz, intensity[:, None]], 1).astype(np.float32)


def crop(points: np.ndarray, radius: float) -> np.ndarray:
    """Points within ``radius`` metres (horizontally) of the sensor."""
    return points[np.linalg.norm(points[:, :2], axis=1) < radius]
