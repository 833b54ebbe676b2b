"""LiDAR-master synchronisation: each cloud takes the closest recent image of every camera.

Plain Python (no rclpy): the node feeds it message stamps, tests feed it numbers.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


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
