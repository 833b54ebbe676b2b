"""Static transforms (/tf_static, extrinsic parameters) as 4x4 matrices, and lookups between frames.

Plain Python (no rclpy), so it is unit-tested directly; the node feeds it /tf_static messages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from clip2scene_ros.geometry.transforms import quaternion_to_matrix


def extrinsic_to_matrix(values: Iterable[float]) -> np.ndarray:
    """4x4 from [x, y, z, qx, qy, qz, qw] or 16 row-major values."""
    v = [float(x) for x in values]
    if len(v) == 16:
        m = np.asarray(v, dtype=np.float64).reshape(4, 4)
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError("a 4x4 extrinsic must have [0, 0, 0, 1] as its last row")
        return m
    if len(v) == 7:
        m = np.eye(4)
        qx, qy, qz, qw = v[3:]
        m[:3, :3] = quaternion_to_matrix((qw, qx, qy, qz))
        m[:3, 3] = v[:3]
        return m
    raise ValueError(f"an extrinsic needs 7 values [x, y, z, qx, qy, qz, qw] or 16 (row-major 4x4), got {len(v)}")


class StaticTransformTree:
    """Static transforms (parent <- child poses) and lookups between any two connected frames."""

    def __init__(self) -> None:
        self._edges: dict[str, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def add(self, parent: str, child: str, parent_from_child: np.ndarray) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        with self._lock:
            self._edges.setdefault(parent, {})[child] = parent_from_child
            self._edges.setdefault(child, {})[parent] = np.linalg.inv(parent_from_child)

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """target_from_source 4x4 (maps points in ``source`` into ``target``), or None."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        with self._lock:
            # BFS from target; T accumulates target_from_frame.
            seen = {target: np.eye(4)}
            frontier = [target]
            while frontier:
                nxt = []
                for f in frontier:
                    for g, f_from_g in self._edges.get(f, {}).items():
                        if g not in seen:
                            seen[g] = seen[f] @ f_from_g
                            if g == source:
                                return seen[g]
                            nxt.append(g)
                frontier = nxt
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self._edges.values()) // 2


def add_transforms(tree: StaticTransformTree, transforms: Iterable[Any]) -> int:
    """Add geometry_msgs/TransformStamped-like items (a /tf_static message's ``transforms``)."""
    n = 0
    for t in transforms:
        tr, q = t.transform.translation, t.transform.rotation
        tree.add(t.header.frame_id, t.child_frame_id, extrinsic_to_matrix([tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w]))
        n += 1
    return n
