"""LiDAR-master synchronisation: each cloud takes the closest recent image of every camera.

Plain Python (no rclpy): the node feeds it message stamps, tests feed it numbers.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable
from typing import Any


def message_bytes(item: Any) -> int:
    """Payload size of an image message (its ``data``), 0 for anything without one."""
    data = getattr(item, "data", None)
    try:
        return len(data) if data is not None else 0
    except TypeError:
        return 0


class CameraBuffer:
    """Recent messages of one camera, sorted by stamp, for closest-stamp lookups.

    Bounded by count and by bytes: six full-resolution cameras at 16 frames each would hold
    hundreds of MB. The oldest messages go first; the newest one is always kept.
    """

    def __init__(self, maxlen: int = 16, max_bytes: int = 0) -> None:
        self._stamps: list[int] = []
        self._items: list[Any] = []
        self._sizes: list[int] = []
        self._maxlen = maxlen
        self.max_bytes = int(max_bytes)  # 0 = count bound only
        self.bytes = 0
        self.last_receipt: float | None = None  # monotonic seconds of the last arrival

    def add(self, stamp_ns: int, item: Any) -> bool:
        """Insert; returns False when the stamp is older than the newest one (time went back)."""
        went_back = bool(self._stamps) and stamp_ns < self._stamps[-1]
        if went_back:
            # A jump back (bag loop, clock reset) makes the old history meaningless.
            self.clear()
        i = bisect.bisect_right(self._stamps, stamp_ns)
        size = message_bytes(item)
        self._stamps.insert(i, stamp_ns)
        self._items.insert(i, item)
        self._sizes.insert(i, size)
        self.bytes += size
        while len(self._stamps) > self._maxlen or (
            self.max_bytes and self.bytes > self.max_bytes and len(self._stamps) > 1
        ):
            self.bytes -= self._sizes[0]
            del self._stamps[0], self._items[0], self._sizes[0]
        self.last_receipt = time.monotonic()
        return not went_back

    def touch(self) -> None:
        """Note an arrival without buffering it (a camera whose images nothing uses)."""
        self.last_receipt = time.monotonic()

    def __len__(self) -> int:
        return len(self._items)

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
        self._sizes.clear()
        self.bytes = 0


class LidarMasterSync:
    """Each cloud takes the closest image of each camera within a tolerance; absent ones are skipped."""

    def __init__(
        self, cameras: Iterable[str], tolerance_s: float, history: int = 16, max_bytes: int = 0, buffer: bool = True
    ) -> None:
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.buffers = {c: CameraBuffer(history, max_bytes) for c in cameras}
        self.buffer = buffer  # False: arrivals are noted (silence detection) but nothing is kept
        self._lock = threading.Lock()

    def add(self, camera: str, stamp_ns: int, item: Any) -> bool:
        with self._lock:
            if not self.buffer:
                self.buffers[camera].touch()
                return True
            return self.buffers[camera].add(stamp_ns, item)

    def buffered_bytes(self) -> dict[str, int]:
        with self._lock:
            return {c: b.bytes for c, b in self.buffers.items()}

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
