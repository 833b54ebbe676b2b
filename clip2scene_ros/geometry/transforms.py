"""Rigid transforms as 4x4 float64 matrices (numpy, ROS-free).

Convention: ``T_a_from_b`` maps homogeneous points in frame ``b`` to frame ``a``
(``p_a = T_a_from_b @ p_b``). Quaternions are (w, x, y, z) as in nuScenes and ROS' geometry
order is converted by the caller. Euler angles follow REP-103: roll, pitch, yaw about the fixed
x, y, z axes (``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``), as in a URDF ``rpy`` or ``static_transform_publisher``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "translation",
    "rot_y",
    "rot_z",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "slerp",
    "rotation_rpy",
    "pose_to_matrix",
    "matrix_to_pose",
    "make_transform",
    "invert_transform",
    "transform_points",
    "compose",
]


def translation(x: float, y: float, z: float) -> np.ndarray:
    """4x4 pure translation."""
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def rot_z(yaw: float) -> np.ndarray:
    """4x4 rotation about z by ``yaw`` radians (counter-clockwise seen from above)."""
    c, s = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


def rot_y(pitch: float) -> np.ndarray:
    """4x4 rotation about y by ``pitch`` radians (REP-103: positive pitch turns x down)."""
    c, s = math.cos(pitch), math.sin(pitch)
    m = np.eye(4)
    m[0, 0], m[0, 2], m[2, 0], m[2, 2] = c, s, -s, c
    return m


def quaternion_to_matrix(q_wxyz: Sequence[float]) -> np.ndarray:
    """3x3 rotation matrix from a (w, x, y, z) quaternion (normalised here)."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    if q.shape != (4,):
        raise ValueError(f"quaternion must have 4 values (w, x, y, z), got shape {q.shape}")
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion {q.tolist()} has zero or non-finite norm")
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit (w, x, y, z) quaternion with w >= 0 of a 3x3 rotation (or the rotation of a 4x4)."""
    r = np.asarray(rotation, dtype=np.float64)[:3, :3]
    tr = np.trace(r)
    # Shepperd's method: divide by the largest of the four candidates for numerical stability
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q) / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def slerp(q0_wxyz: Sequence[float], q1_wxyz: Sequence[float], w: float) -> np.ndarray:
    """Unit quaternion ``w`` (0..1) of the way from ``q0`` to ``q1`` along the shorter arc."""
    q0 = np.asarray(q0_wxyz, dtype=np.float64) / np.linalg.norm(q0_wxyz)
    q1 = np.asarray(q1_wxyz, dtype=np.float64) / np.linalg.norm(q1_wxyz)
    d = float(q0 @ q1)
    if d < 0:  # q and -q are the same rotation: take the nearer one
        q1, d = -q1, -d
    if d > 0.9995:  # nearly equal: sin(theta) ~ 0, the straight line is exact to ~1e-8
        q = q0 + w * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(d)
    return (math.sin((1 - w) * theta) * q0 + math.sin(w * theta) * q1) / math.sin(theta)


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """3x3 rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians, REP-103 fixed axes)."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def pose_to_matrix(pose: Sequence[float]) -> np.ndarray:
    """4x4 transform of a pose ``(x, y, z, roll, pitch, yaw)`` (metres, radians)."""
    p = np.asarray(pose, dtype=np.float64).reshape(-1)
    if p.shape != (6,) or not np.isfinite(p).all():
        raise ValueError(f"a pose needs 6 finite numbers (x, y, z, roll, pitch, yaw), got {list(np.ravel(pose))}")
    return make_transform(rotation_rpy(*p[3:]), p[:3])


def matrix_to_pose(T: np.ndarray) -> np.ndarray:
    """``(x, y, z, roll, pitch, yaw)`` of a rigid 4x4 transform (inverse of :func:`pose_to_matrix`)."""
    T = _check_transform(T)
    r = T[:3, :3]
    pitch = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    if abs(r[2, 0]) < 1 - 1e-9:
        roll, yaw = np.arctan2(r[2, 1], r[2, 2]), np.arctan2(r[1, 0], r[0, 0])
    else:  # gimbal lock: only roll - yaw (or roll + yaw) is defined; put it all in yaw
        roll, yaw = 0.0, np.arctan2(-r[0, 1], r[1, 1])
    return np.array([*T[:3, 3], roll, pitch, yaw])


def make_transform(rotation: np.ndarray | Sequence[float], translation: Sequence[float]) -> np.ndarray:
    """4x4 transform from a 3x3 matrix or a (w, x, y, z) quaternion and a translation."""
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape == (4,):
        rot = quaternion_to_matrix(rot)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation must be a 3x3 matrix or a (w,x,y,z) quaternion, got shape {rot.shape}")
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    if t.shape != (3,):
        raise ValueError(f"translation must have 3 values, got {t.shape}")
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = t
    return out


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (uses R^T, exact for rotations)."""
    T = _check_transform(T)
    out = np.eye(4)
    rt = T[:3, :3].T
    out[:3, :3] = rt
    out[:3, 3] = -rt @ T[:3, 3]
    return out


def compose(*transforms: np.ndarray) -> np.ndarray:
    """Matrix product left to right: ``compose(A, B, C) = A @ B @ C``."""
    out = np.eye(4)
    for T in transforms:
        out = out @ _check_transform(T)
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to the first 3 columns of ``points`` [P, 3+F]; extra columns are kept.

    Computed in float64 and returned in the input dtype.
    """
    T = _check_transform(T)
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"points must be [P, 3+F], got shape {pts.shape}")
    xyz = pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    out = pts.copy()
    out[:, :3] = xyz.astype(pts.dtype, copy=False)
    return out


def _check_transform(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"expected a 4x4 transform, got shape {T.shape}")
    return T
