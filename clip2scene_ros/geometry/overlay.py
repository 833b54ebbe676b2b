"""Calibration overlay: LiDAR points drawn onto a camera image, coloured by label or by depth.

A glance at it shows whether extrinsics and time sync are right (points of a pole land on the
pole). The projection is ``projection.project_points`` (the same pinhole model as training); the
points are drawn in far-to-near order so near points stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .projection import in_image_mask, project_points

COLOR_MODES = ("label", "depth")


@dataclass
class Overlay:
    image: np.ndarray  # uint8 [H, W, 3]: the camera image with the points drawn on it
    uv: np.ndarray  # float64 [M, 2]: sub-pixel image coordinates of the drawn points
    depth: np.ndarray  # float64 [M]: their depth along the optical axis (m)
    index: np.ndarray  # int64 [M]: their indices in the cloud


def depth_colors(depth: np.ndarray, near: float = 1.0, far: float = 60.0) -> np.ndarray:
    """uint8 [M, 3]: red (near) through yellow and green to blue (far), log-scaled."""
    t = np.clip((np.log(np.maximum(depth, near)) - np.log(near)) / (np.log(far) - np.log(near)), 0.0, 1.0)
    stops = np.array([[255, 0, 0], [255, 220, 0], [0, 200, 0], [0, 80, 255]], dtype=np.float64)
    x = t * (len(stops) - 1)
    i = np.minimum(x.astype(np.int64), len(stops) - 2)
    f = (x - i)[:, None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def draw_overlay(
    image: np.ndarray,
    K: np.ndarray,
    cam_from_lidar: np.ndarray,
    xyz: np.ndarray,
    colors: np.ndarray | None = None,
    min_depth: float = 1.0,
    radius: int = 1,
) -> Overlay:
    """Project ``xyz`` [P, 3] into ``image`` and draw a (2 * radius + 1)-pixel square per point.

    ``colors`` uint8 [P, 3] per point (e.g. the label palette); None colours by depth.
    """
    h, w = image.shape[:2]
    uv, depth = project_points(xyz, cam_from_lidar, K)
    keep = np.flatnonzero(in_image_mask(uv, depth, w, h, min_depth=min_depth))
    keep = keep[np.argsort(-depth[keep], kind="stable")]  # far first: near points drawn last, on top
    uv_k, depth_k = uv[keep], depth[keep]
    rgb = depth_colors(depth_k) if colors is None else np.asarray(colors, dtype=np.uint8)[keep]
    out = np.array(image, dtype=np.uint8, copy=True)
    col = np.floor(uv_k[:, 0]).astype(np.int64)
    row = np.floor(uv_k[:, 1]).astype(np.int64)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r, c = np.clip(row + dy, 0, h - 1), np.clip(col + dx, 0, w - 1)
            out[r, c] = rgb
    return Overlay(out, uv_k, depth_k, keep)
