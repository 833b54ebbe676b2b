"""Transforms between frames from /tf_static and /tf, looked up at a time stamp. Plain Python (no rclpy).

The part of tf2's buffer the node needs, so it runs where tf2_ros is not installed:

- a static edge (/tf_static, extrinsic parameters) holds one pose for all time;
- a dynamic edge (/tf) holds a time-ordered history of the last ``history_s`` seconds. A lookup
  between two stamps interpolates (translation linearly, rotation by slerp) and never extrapolates
  more than ``tolerance_s`` beyond either end of the history: a moving robot's pose guessed from an
  old one would put the points in the wrong place.

Each child frame has one parent (a message naming another parent replaces the edge, as in tf2), so
the frames form a tree and a lookup composes the edges on the path between two frames.
:meth:`TransformBuffer.wait_for` blocks its caller (the node's inference worker, never an executor
callback) until the transform at a stamp can be resolved or the timeout passes; every ``add``
wakes it.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clip2scene_ros.geometry.transforms import (
    invert_transform,
    make_transform,
    matrix_to_quaternion,
    quaternion_to_matrix,
    slerp,
)

DEFAULT_HISTORY_S = 10.0
DEFAULT_TOLERANCE_S = 0.005  # clock jitter between a sensor's stamp and the transform's, never real motion
MAX_ENTRIES = 10_000  # per dynamic edge: bounds memory whatever rate /tf is published at


def extrinsic_to_matrix(values: Iterable[float]) -> np.ndarray:
    """4x4 from [x, y, z, qx, qy, qz, qw] or 16 row-major values."""
    v = [float(x) for x in values]
    if len(v) == 16:
        m = np.asarray(v, dtype=np.float64).reshape(4, 4)
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError("a 4x4 extrinsic must have [0, 0, 0, 1] as its last row")
        return m
    if len(v) == 7:
        qx, qy, qz, qw = v[3:]
        return make_transform(quaternion_to_matrix((qw, qx, qy, qz)), v[:3])
    raise ValueError(f"an extrinsic needs 7 values [x, y, z, qx, qy, qz, qw] or 16 (row-major 4x4), got {len(v)}")


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:.3f} s"


@dataclass
class _Edge:
    """parent_from_child: one static pose, or a dynamic history sorted by stamp."""

    parent: str
    static: np.ndarray | None = None
    stamps: list[int] = field(default_factory=list)  # ns, ascending
    translations: list[np.ndarray] = field(default_factory=list)
    rotations: list[np.ndarray] = field(default_factory=list)  # unit (w, x, y, z)

    def insert(self, stamp_ns: int, parent_from_child: np.ndarray, history_ns: int) -> None:
        if self.stamps and stamp_ns < self.stamps[-1] - history_ns:
            self.stamps, self.translations, self.rotations = [], [], []  # time went back (bag loop, reset)
        i = bisect.bisect_left(self.stamps, stamp_ns)
        t, q = parent_from_child[:3, 3].copy(), matrix_to_quaternion(parent_from_child)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:  # the same stamp again: the newer pose wins
            self.translations[i], self.rotations[i] = t, q
        else:
            self.stamps.insert(i, stamp_ns)
            self.translations.insert(i, t)
            self.rotations.insert(i, q)
        old = max(bisect.bisect_left(self.stamps, self.stamps[-1] - history_ns), len(self.stamps) - MAX_ENTRIES)
        if old > 0:
            del self.stamps[:old], self.translations[:old], self.rotations[:old]

    def at(self, stamp_ns: int | None, tolerance_ns: int) -> tuple[np.ndarray | None, str]:
        """(parent_from_child at the stamp (None: the newest), "") or (None, why not)."""
        if self.static is not None:
            return self.static, ""
        s = self.stamps
        if stamp_ns is None:
            i = len(s) - 1
        else:
            i = bisect.bisect_left(s, stamp_ns)
            if i < len(s) and s[i] == stamp_ns:
                pass
            elif 0 < i < len(s):  # between two poses
                w = (stamp_ns - s[i - 1]) / (s[i] - s[i - 1])
                t = (1 - w) * self.translations[i - 1] + w * self.translations[i]
                return make_transform(slerp(self.rotations[i - 1], self.rotations[i], w), t), ""
            elif i == len(s) and stamp_ns - s[-1] <= tolerance_ns:
                i -= 1
            elif i == 0 and s[0] - stamp_ns <= tolerance_ns:
                pass
            elif i == len(s):
                return None, f"newest pose {_seconds(stamp_ns - s[-1])} before the stamp"
            else:
                return None, f"oldest pose kept {_seconds(s[0] - stamp_ns)} after the stamp"
        return make_transform(self.rotations[i], self.translations[i]), ""


class TransformBuffer:
    """Static and dynamic transforms (parent <- child) and lookups between connected frames at a stamp."""

    def __init__(self, history_s: float = DEFAULT_HISTORY_S, tolerance_s: float = DEFAULT_TOLERANCE_S) -> None:
        self.history_ns = int(history_s * 1e9)
        self.tolerance_ns = int(tolerance_s * 1e9)
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent
        self._changed = threading.Condition()

    def add(self, parent: str, child: str, parent_from_child: np.ndarray, stamp_ns: int | None = None) -> None:
        """A static transform (``stamp_ns`` None) or one pose of a dynamic one at ``stamp_ns``."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        m = np.asarray(parent_from_child, dtype=np.float64)
        with self._changed:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or (edge.static is not None) != (stamp_ns is None):
                edge = self._edges[child] = _Edge(parent)
            if stamp_ns is None:
                edge.static = m
            else:
                edge.insert(int(stamp_ns), m, self.history_ns)
            self._changed.notify_all()

    def add_transforms(self, transforms: Iterable[Any], static: bool) -> int:
        """Add geometry_msgs/TransformStamped-like items (a /tf or /tf_static message's ``transforms``)."""
        n = 0
        for t in transforms:
            tr, q = t.transform.translation, t.transform.rotation
            try:
                m = extrinsic_to_matrix([tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w])
            except ValueError:  # a zero quaternion: not a pose; tf2 rejects it too
                continue
            stamp = None if static else int(t.header.stamp.sec) * 1_000_000_000 + int(t.header.stamp.nanosec)
            self.add(t.header.frame_id, t.child_frame_id, m, stamp)
            n += 1
        return n

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray | None:
        """target_from_source 4x4 (maps points in ``source`` into ``target``) at ``stamp_ns`` (None:
        the newest poses), or None when it cannot be resolved without extrapolating."""
        with self._changed:
            return self._resolve(target.lstrip("/"), source.lstrip("/"), stamp_ns)[0]

    def wait_for(
        self, target: str, source: str, stamp_ns: int | None, timeout_s: float
    ) -> tuple[np.ndarray | None, str]:
        """:meth:`lookup`, waiting up to ``timeout_s`` for the poses it needs: (transform, "") or
        (None, why it is unavailable)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found, why = self._resolve(target, source, stamp_ns)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found, why
                self._changed.wait(remaining)

    def _root_path(self, frame: str) -> list[str]:
        """``frame``, its parent, its parent's parent, ... up to a frame without parent."""
        path, seen = [frame], {frame}
        while (edge := self._edges.get(path[-1])) is not None and edge.parent not in seen:
            path.append(edge.parent)
            seen.add(edge.parent)
        return path

    def _up(self, path: list[str], stamp_ns: int | None) -> tuple[np.ndarray | None, str]:
        """last_from_first along a root path."""
        out = np.eye(4)
        for child in path[:-1]:
            edge = self._edges[child]
            m, why = edge.at(stamp_ns, self.tolerance_ns)
            if m is None:
                return None, f"{edge.parent} <- {child} on /tf: {why}"
            out = m @ out
        return out, ""

    def _resolve(self, target: str, source: str, stamp_ns: int | None) -> tuple[np.ndarray | None, str]:
        if not (target and source):
            return None, "a frame name is empty (a header without frame_id?)"
        if target == source:
            return np.eye(4), ""
        up_source, up_target = self._root_path(source), self._root_path(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            unknown = [f for f in (target, source) if f not in self._edges and not self._has_child(f)]
            if unknown:
                return None, f"frame {' and '.join(unknown)} has no transform yet"
            return None, f"frames {target} and {source} are not connected (roots {up_target[-1]}, {up_source[-1]})"
        common_from_source, why = self._up(up_source[: up_source.index(common) + 1], stamp_ns)
        if common_from_source is None:
            return None, why
        common_from_target, why = self._up(up_target[: up_target.index(common) + 1], stamp_ns)
        if common_from_target is None:
            return None, why
        return invert_transform(common_from_target) @ common_from_source, ""

    def _has_child(self, frame: str) -> bool:
        return any(edge.parent == frame for edge in self._edges.values())

    def __len__(self) -> int:
        return len(self._edges)


# ---- rclpy side --------------------------------------------------------------------------------


def subscribe_tf(node: Any, buffer: TransformBuffer, group: Any, cameras_without_extrinsics: list[str],
                 base_frame: str) -> str:  # fmt: skip
    """Feed ``buffer`` from /tf_static (latched) and /tf, with tf2 listener's QoS. Returns a warning
    when tf2_msgs is missing, saying what to set instead ("" when subscribed)."""
    try:  # a ROS install, or the TFMessage-only subset scripts/setup.sh builds into the venv
        from tf2_msgs.msg import TFMessage
    except ImportError:  # pragma: no cover - depends on the installation
        instead = [f"extrinsics.<camera> for {', '.join(cameras_without_extrinsics)} (skipped for fusion until then)"]
        instead = instead if cameras_without_extrinsics else []
        instead += [f"lidar_pose (clouds need {base_frame} <- their frame)"] if base_frame else []
        return "tf2_msgs is not installed, so /tf_static and /tf cannot be read; set " + " and ".join(instead)
    from clip2scene_ros.nodes.parameters import qos

    def on_static(msg: Any) -> None:
        buffer.add_transforms(msg.transforms, static=True)

    def on_dynamic(msg: Any) -> None:
        buffer.add_transforms(msg.transforms, static=False)

    latched = qos("reliable", 100, latched=True)
    node.create_subscription(TFMessage, "/tf_static", on_static, latched, callback_group=group)
    node.create_subscription(TFMessage, "/tf", on_dynamic, qos("reliable", 100), callback_group=group)
    return ""
