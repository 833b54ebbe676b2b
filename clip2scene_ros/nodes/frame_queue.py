"""The bounded queue between segment_node's subscription callbacks and its inference worker."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


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
