"""Pinhole projection and point-pixel pairing with image-bound and occlusion (depth) tests.

Array in, array out; shared by training (dataset pairing) and the online node (camera fusion), which
pair through one :class:`PairingConfig` so both see the same points.

Pixel convention: ``uv`` are continuous pixel coordinates from ``K @ p_cam / z``; a point is inside
an image of size (W, H) when ``margin <= u < W - margin`` and ``margin <= v < H - margin`` (the
KITTI/nuScenes tooling convention), and its integer pixel is ``floor(uv)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clip2scene_ros.geometry.transforms import invert_transform

__all__ = [
    "CameraModel",
    "PointPixelPairs",
    "project_points",
    "in_image_mask",
    "pixel_indices",
    "depth_image_visibility",
    "zbuffer_visibility",
    "pair_points_with_cameras",
    "PairingConfig",
]

OCCLUSION_MODES = ("auto", "depth_image", "zbuffer", "none")


@dataclass
class CameraModel:
    """One pinhole camera as seen from the point cloud's frame.

    ``T_cam_from_points`` maps the cloud's frame (e.g. the key-frame LiDAR) to the camera's optical
    frame (x right, y down, z forward). ``depth`` is an optional metric depth image [H, W] (z along
    the optical axis) used for the occlusion test, e.g. rendered by the simulator.
    """

    name: str
    K: np.ndarray
    T_cam_from_points: np.ndarray
    width: int
    height: int
    depth: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64)
        self.T_cam_from_points = np.asarray(self.T_cam_from_points, dtype=np.float64)
        if self.K.shape != (3, 3):
            raise ValueError(f"camera {self.name!r}: K must be 3x3, got {self.K.shape}")
        if self.T_cam_from_points.shape != (4, 4):
            raise ValueError(f"camera {self.name!r}: T_cam_from_points must be 4x4")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(
                f"camera {self.name!r}: image size must be positive, got {self.width}x{self.height}"
            )
        if self.depth is not None and self.depth.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"camera {self.name!r}: depth image is {self.depth.shape[:2]} but the camera is "
                f"{self.height}x{self.width} (H x W); pass the depth rendered for this camera"
            )

    @classmethod
    def from_cam_to_points(
        cls,
        name: str,
        K: np.ndarray,
        T_points_from_cam: np.ndarray,
        width: int,
        height: int,
        depth: np.ndarray | None = None,
    ) -> CameraModel:
        """Build from an extrinsic given the other way round (camera pose in the cloud frame)."""
        return cls(name, K, invert_transform(T_points_from_cam), width, height, depth)


@dataclass
class PointPixelPairs:
    """Pairs of (point, camera, pixel). Several cameras may see one point unless deduplicated."""

    point_index: np.ndarray  # int64 [N]
    camera_index: np.ndarray  # int64 [N]
    uv: np.ndarray  # float32 [N, 2] continuous pixel coordinates in that camera
    depth: np.ndarray  # float32 [N] metres along the optical axis
    camera_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.point_index.shape[0])

    def seen_mask(self, num_points: int) -> np.ndarray:
        """Boolean [num_points]: True where at least one camera sees the point."""
        mask = np.zeros(num_points, dtype=bool)
        mask[self.point_index] = True
        return mask

    def select(self, keep: np.ndarray) -> PointPixelPairs:
        return PointPixelPairs(
            self.point_index[keep],
            self.camera_index[keep],
            self.uv[keep],
            self.depth[keep],
            list(self.camera_names),
        )

    @classmethod
    def empty(cls, camera_names: Sequence[str] = ()) -> PointPixelPairs:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            list(camera_names),
        )


def project_points(
    points_xyz: np.ndarray, T_cam_from_points: np.ndarray, K: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project [P, 3] points: returns (uv [P, 2] float64, depth [P] float64 along the optical axis).

    Points behind the camera get uv = NaN (never inside any image).
    """
    pts = np.asarray(points_xyz, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be [P, 3+], got shape {pts.shape}")
    T = np.asarray(T_cam_from_points, dtype=np.float64)
    cam = pts[:, :3] @ T[:3, :3].T + T[:3, 3]
    depth = cam[:, 2]
    img = cam @ np.asarray(K, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = img[:, :2] / depth[:, None]
    uv[depth <= 0] = np.nan
    return uv, depth


def in_image_mask(
    uv: np.ndarray, depth: np.ndarray, width: int, height: int, min_depth: float = 1.0, margin: float = 0.0
) -> np.ndarray:
    """Points in front of the camera (depth > min_depth) whose pixel lies inside the image."""
    u, v = uv[:, 0], uv[:, 1]
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(u)
            & np.isfinite(v)
            & (depth > min_depth)
            & (u >= margin)
            & (u < width - margin)
            & (v >= margin)
            & (v < height - margin)
        )


def pixel_indices(uv: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer (column, row) of each in-image continuous pixel coordinate."""
    col = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, width - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, height - 1)
    return col, row


def depth_image_visibility(
    uv: np.ndarray,
    depth: np.ndarray,
    depth_image: np.ndarray,
    abs_tolerance: float = 0.3,
    rel_tolerance: float = 0.03,
    window: int = 1,
) -> np.ndarray:
    """Occlusion test against a rendered depth image: visible if the point is no farther than the
    surface seen at its pixel plus a tolerance. ``window`` > 0 takes the farthest depth of a
    (2w+1)^2 neighbourhood so that points on silhouette edges are not rejected by half-pixel error.
    """
    h, w = depth_image.shape[:2]
    col, row = pixel_indices(uv, w, h)
    surface = depth_image[row, col].astype(np.float64)
    for dr in range(-window, window + 1):
        for dc in range(-window, window + 1):
            if dr == 0 and dc == 0:
                continue
            rr = np.clip(row + dr, 0, h - 1)
            cc = np.clip(col + dc, 0, w - 1)
            surface = np.maximum(surface, depth_image[rr, cc])
    surface = np.where(np.isfinite(surface) & (surface > 0), surface, np.inf)  # sky / no hit
    return depth <= surface + abs_tolerance + rel_tolerance * depth


def zbuffer_visibility(
    uv: np.ndarray,
    depth: np.ndarray,
    width: int,
    height: int,
    cell: int = 8,
    abs_tolerance: float = 0.5,
    rel_tolerance: float = 0.1,
) -> np.ndarray:
    """Occlusion test without a depth image: the projected cloud is its own z-buffer.

    The image is cut into ``cell`` x ``cell`` pixel cells; a point is visible when it is within the
    tolerance of the nearest point in its cell. This removes points seen "through" a foreground
    object because the LiDAR and the camera sit at different places.
    """
    if len(depth) == 0:
        return np.zeros(0, dtype=bool)
    col, row = pixel_indices(uv, width, height)
    ncols = (width + cell - 1) // cell
    key = (row // cell) * ncols + (col // cell)
    nearest = np.full(int(key.max()) + 1, np.inf)
    np.minimum.at(nearest, key, depth)
    front = nearest[key]
    return depth <= front + abs_tolerance + rel_tolerance * front


def pair_points_with_cameras(
    points_xyz: np.ndarray,
    cameras: Sequence[CameraModel],
    min_depth: float = 1.0,
    margin: float = 0.0,
    occlusion: str = "auto",
    one_camera_per_point: bool = False,
    depth_abs_tolerance: float = 0.3,
    depth_rel_tolerance: float = 0.03,
    zbuffer_cell: int = 8,
) -> PointPixelPairs:
    """Pair every point with the pixels of the cameras that see it.

    occlusion: ``auto`` uses a camera's depth image when it has one, otherwise the z-buffer of the
    projected cloud; ``depth_image`` requires depth images; ``zbuffer``; ``none`` (bounds only).
    ``one_camera_per_point`` keeps, for a point seen by several cameras, the pair closest to its
    image centre (the overlap regions of a ring of cameras are small).
    """
    if occlusion not in OCCLUSION_MODES:
        raise ValueError(f"occlusion must be one of {OCCLUSION_MODES}, got {occlusion!r}")
    pts = np.asarray(points_xyz)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be [P, 3+], got shape {pts.shape}")
    names = [c.name for c in cameras]
    finite = np.isfinite(pts[:, :3]).all(axis=1)
    chunks = []
    for ci, cam in enumerate(cameras):
        uv, depth = project_points(pts[:, :3], cam.T_cam_from_points, cam.K)
        keep = finite & in_image_mask(uv, depth, cam.width, cam.height, min_depth, margin)
        idx = np.nonzero(keep)[0]
        uv_k, d_k = uv[idx], depth[idx]
        mode = occlusion
        if mode == "auto":
            mode = "depth_image" if cam.depth is not None else "zbuffer"
        if mode == "depth_image":
            if cam.depth is None:
                raise ValueError(f"camera {cam.name!r} has no depth image; use occlusion='zbuffer' or 'none'")
            vis = depth_image_visibility(uv_k, d_k, cam.depth, depth_abs_tolerance, depth_rel_tolerance)
        elif mode == "zbuffer":
            vis = zbuffer_visibility(uv_k, d_k, cam.width, cam.height, zbuffer_cell)
        else:
            vis = np.ones(len(idx), dtype=bool)
        idx, uv_k, d_k = idx[vis], uv_k[vis], d_k[vis]
        chunks.append((idx, np.full(len(idx), ci, np.int64), uv_k.astype(np.float32), d_k.astype(np.float32)))
    if not chunks:
        return PointPixelPairs.empty(names)
    pairs = PointPixelPairs(
        np.concatenate([c[0] for c in chunks]).astype(np.int64),
        np.concatenate([c[1] for c in chunks]),
        np.concatenate([c[2] for c in chunks]).reshape(-1, 2),
        np.concatenate([c[3] for c in chunks]),
        names,
    )
    if one_camera_per_point and len(pairs):
        sizes = np.array([[c.width, c.height] for c in cameras], dtype=np.float32)
        centre_dist = np.linalg.norm(pairs.uv / sizes[pairs.camera_index] - 0.5, axis=1)
        order = np.lexsort((centre_dist, pairs.point_index))
        first = np.ones(len(order), dtype=bool)
        first[1:] = pairs.point_index[order][1:] != pairs.point_index[order][:-1]
        pairs = pairs.select(np.sort(order[first]))
    return pairs


@dataclass
class PairingConfig:
    """How points pair with pixels: the same defaults for training targets and online fusion."""

    min_depth: float = 1.0
    occlusion: str = "auto"  # auto: depth image when rendered, else the cloud's z-buffer
    one_camera_per_point: bool = True
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.occlusion not in OCCLUSION_MODES:
            raise ValueError(f"occlusion must be one of {OCCLUSION_MODES}, got {self.occlusion!r}")
        if not self.min_depth >= 0 or not self.margin >= 0:
            raise ValueError(f"min_depth and margin must be >= 0, got {self.min_depth}, {self.margin}")

    def pair(self, points_xyz: np.ndarray, cameras: Sequence[CameraModel]) -> PointPixelPairs:
        return pair_points_with_cameras(
            points_xyz,
            cameras,
            min_depth=self.min_depth,
            margin=self.margin,
            occlusion=self.occlusion,
            one_camera_per_point=self.one_camera_per_point,
        )
