"""ROS-free plumbing of the segment node: frame queue, LiDAR-master sync, rates, static transforms.

Kept free of rclpy so it can be unit-tested and reused by replay tools.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class FrameQueue:
    """Bounded FIFO between the subscription callback and the inference worker.

    When full, the OLDEST frame is dropped (a robot wants the newest data) and counted.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._cv = threading.Condition()
        self.dropped = 0
        self._closed = False

    def put(self, item: Any) -> bool:
        """Append; returns False when an older frame had to be dropped to make room."""
        with self._cv:
            dropped = False
            while len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self._cv.notify()
            return not dropped

    def get(self, timeout: float | None = None) -> Any | None:
        with self._cv:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._items and not self._closed:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cv.wait(remaining)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)


@dataclass
class _Stamped:
    stamp_ns: int
    item: Any


class CameraBuffer:
    """Recent messages of one camera, sorted by stamp, for closest-stamp lookups."""

    def __init__(self, maxlen: int = 16) -> None:
        self._stamps: list[int] = []
        self._items: list[Any] = []
        self._maxlen = maxlen
        self.last_receipt: float | None = None  # monotonic seconds of the last arrival

    def add(self, stamp_ns: int, item: Any) -> bool:
        """Insert; returns False when the stamp is older than the newest one (time went back)."""
        went_back = bool(self._stamps) and stamp_ns < self._stamps[-1]
        if went_back:
            # A jump back (bag loop, clock reset) makes the old history meaningless.
            self._stamps.clear()
            self._items.clear()
        i = bisect.bisect_right(self._stamps, stamp_ns)
        self._stamps.insert(i, stamp_ns)
        self._items.insert(i, item)
        if len(self._stamps) > self._maxlen:
            del self._stamps[0], self._items[0]
        self.last_receipt = time.monotonic()
        return not went_back

    def closest(self, stamp_ns: int, tolerance_ns: int) -> tuple[Any, int] | None:
        """(item, |dt| ns) of the message closest to ``stamp_ns`` within tolerance, else None."""
        if not self._stamps:
            return None
        i = bisect.bisect_left(self._stamps, stamp_ns)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self._stamps):
                dt = abs(self._stamps[j] - stamp_ns)
                if dt <= tolerance_ns and (best is None or dt < best[1]):
                    best = (self._items[j], dt)
        return best

    def clear(self) -> None:
        self._stamps.clear()
        self._items.clear()


class LidarMasterSync:
    """Each cloud takes the closest image of each camera within a tolerance; absent ones are skipped."""

    def __init__(self, cameras: Iterable[str], tolerance_s: float, history: int = 16) -> None:
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.buffers = {c: CameraBuffer(history) for c in cameras}
        self._lock = threading.Lock()

    def add(self, camera: str, stamp_ns: int, item: Any) -> bool:
        with self._lock:
            return self.buffers[camera].add(stamp_ns, item)

    def match(self, stamp_ns: int) -> dict[str, tuple[Any, int]]:
        """{camera: (item, |dt| ns)} for every camera with an image close enough to the cloud."""
        out = {}
        with self._lock:
            for cam, buf in self.buffers.items():
                hit = buf.closest(stamp_ns, self.tolerance_ns)
                if hit is not None:
                    out[cam] = hit
        return out

    def silent_cameras(self, timeout_s: float, now: float | None = None) -> dict[str, float | None]:
        """{camera: seconds since last message (None = never)} for cameras silent longer than timeout."""
        now = time.monotonic() if now is None else now
        out = {}
        with self._lock:
            for cam, buf in self.buffers.items():
                age = None if buf.last_receipt is None else now - buf.last_receipt
                if age is None or age > timeout_s:
                    out[cam] = age
        return out

    def clear(self) -> None:
        with self._lock:
            for buf in self.buffers.values():
                buf.clear()


class RateMeter:
    """Message rate over a sliding window of arrival times (monotonic seconds)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._times: deque[float] = deque()
        self._window = window_s
        self.count = 0

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        self.count += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclass
class LatencyStats:
    """Rolling window of per-frame figures (ms) for diagnostics and the benchmark."""

    window: int = 200
    values: dict[str, deque] = field(default_factory=dict)

    def add(self, name: str, value_ms: float) -> None:
        self.values.setdefault(name, deque(maxlen=self.window)).append(value_ms)

    def percentile(self, name: str, q: float) -> float:
        v = self.values.get(name)
        return float(np.percentile(np.fromiter(v, float), q)) if v else float("nan")


# ---- static transforms ---------------------------------------------------------------------


def quat_to_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    n = np.linalg.norm(q)
    if n < 1e-9:
        raise ValueError("quaternion has zero length")
    w, x, y, z = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def pose_to_matrix(values: Iterable[float]) -> np.ndarray:
    """4x4 from [x, y, z, qx, qy, qz, qw] or 16 row-major values."""
    v = [float(x) for x in values]
    if len(v) == 16:
        m = np.asarray(v, dtype=np.float64).reshape(4, 4)
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError("a 4x4 extrinsic must have [0, 0, 0, 1] as its last row")
        return m
    if len(v) == 7:
        m = np.eye(4)
        m[:3, :3] = quat_to_matrix(*v[3:])
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
        tree.add(t.header.frame_id, t.child_frame_id, pose_to_matrix([tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w]))
        n += 1
    return n
