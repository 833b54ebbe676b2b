"""Locate the package's data files (config/, launch/) and prepare the ROS 2 environment.

Installed packages find them through the ament index (``share/clip2scene_ros``); a source
checkout falls back to the repository root, so one lookup works for colcon, pip and git users.
"""

from __future__ import annotations

import functools
import mmap
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

PACKAGE = "clip2scene_ros"
_REPO_ROOT = Path(__file__).resolve().parent.parent
DDS_PROFILE_RELPATH = "config/dds/fastdds_shm_64mb.xml"


def share_dir() -> Path:
    """Return the directory that holds ``config/`` and ``launch/`` for this package."""
    if (_REPO_ROOT / "package.xml").is_file() and (_REPO_ROOT / "config").is_dir():
        return _REPO_ROOT  # a source checkout: its files are the ones being edited
    for prefix in _ament_prefixes():
        candidate = Path(prefix) / "share" / PACKAGE
        if (candidate / "package.xml").is_file():
            return candidate
    raise FileNotFoundError(
        f"cannot find the '{PACKAGE}' share directory; install the package "
        "(scripts/setup.sh, pip install . or colcon build) or set AMENT_PREFIX_PATH"
    )


def config_path(*parts: str) -> Path:
    """Path of a file under ``config/``, e.g. ``config_path('segment.yaml')``."""
    return share_dir().joinpath("config", *parts)


def _ament_prefixes() -> list[str]:
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:
        prefixes.append(sys.prefix)
    return prefixes


def configure_ros_environment() -> None:
    """Set process-wide defaults every clip2scene command relies on, before rclpy starts.

    - Fast DDS uses the shipped 64 MB shared-memory profile (large clouds and images otherwise get
      dropped or delayed), unless the user already chose a profile. Its readers and writers free
      each sample's buffer once released: rmw_fastrtps applies that memory policy only with
      ``RMW_FASTRTPS_USE_QOS_FROM_XML=1``, set along with the profile.
    - ``AMENT_PREFIX_PATH`` includes this interpreter's prefix, where pip-installed ROS wheels and
      our package register in the ament index (nothing sets it in a plain venv).
    """
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:
        try:
            profile = share_dir() / DDS_PROFILE_RELPATH
        except FileNotFoundError:
            profile = None
        if profile is not None and profile.is_file():
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
            os.environ.setdefault("RMW_FASTRTPS_USE_QOS_FROM_XML", "1")
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(_ament_prefixes())


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
HEAP_TRIM_PERIOD_S = 10.0  # trim_heap period of long-running nodes: ~1 ms per frame amortised at 10 Hz


@functools.cache
def _libc() -> Any:  # None when not glibc: nothing to tune
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def fix_malloc_thresholds(mmap_bytes: int = 32 << 20, trim_bytes: int = 64 << 20) -> None:
    """Keep a frame's large buffers (voxel tensors, clouds) in the heap, with fixed thresholds.

    Buffers served by mmap, or heap tops trimmed after every frame, come back as fresh zero pages
    on the next frame: tens of thousands of page faults that doubled the forward time. Fixed values
    also stop glibc's dynamic adjustment, so the heap's slack is bounded instead of following the
    largest frame ever seen; ``trim_heap`` returns what frames of varying size leave behind.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes)  # glibc refuses values above 32 MB on 64-bit
        libc.mallopt(M_TRIM_THRESHOLD, trim_bytes)


def trim_heap() -> None:
    """Return the free pages of every malloc arena to the system (a few ms; the next frame
    faults its buffers back in, so call it every few seconds, not every frame)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class VectorLRU:
    """A bounded LRU of float32 vectors (phrase embeddings) kept in preallocated slabs.

    Entries stored one by one are small long-lived allocations made right after the large
    short-lived buffers of the text encoder, in the same thread's malloc arena: they pin holes
    between those buffers, and a node answering new phrases grew that arena steadily while its live
    data stayed flat. Here each vector length gets one anonymous mapping of ``capacity`` rows
    (outside malloc; a page is resident only once written) and evicted rows are reused, so entries
    never touch the heap. Thread-safe; ``get`` returns a copy, never a view of a reusable row.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._slots: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()  # key -> (length, row)
        self._slabs: dict[int, tuple[Any, Any]] = {}  # length -> (mapping, float32 [capacity, length])
        self._free: dict[int, list[int]] = {}  # length -> unused rows
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._slots

    def get(self, key: Hashable) -> Any:
        """A copy of the vector stored under ``key`` (1-D float32 array), or None; marks it recent."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return None
            self._slots.move_to_end(key)
            return self._slabs[slot[0]][1][slot[1]].copy()

    def put(self, key: Hashable, vector: Any) -> None:
        """Store a copy of ``vector`` (any shape, flattened to float32), evicting the least recent."""
        import numpy as np

        flat = np.asarray(vector, dtype=np.float32).reshape(-1)
        n = flat.size
        if n == 0:
            raise ValueError("cannot store an empty vector")
        with self._lock:
            old = self._slots.pop(key, None)
            if old is not None:
                self._free[old[0]].append(old[1])
            while len(self._slots) >= self.capacity:
                length, row = self._slots.popitem(last=False)[1]
                self._free[length].append(row)
            if n not in self._slabs:
                mapping = mmap.mmap(-1, self.capacity * n * 4)
                self._slabs[n] = (mapping, np.frombuffer(mapping, np.float32).reshape(self.capacity, n))
                self._free[n] = list(range(self.capacity - 1, -1, -1))
            row = self._free[n].pop()
            self._slabs[n][1][row] = flat
            self._slots[key] = (n, row)

    def clear(self) -> None:
        with self._lock:
            for length, row in self._slots.values():
                self._free[length].append(row)
            self._slots.clear()
