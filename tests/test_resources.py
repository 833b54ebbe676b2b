"""Bounded memory of long-running processes: the vector store behind the text-embedding caches stays
within its capacity and reuses its preallocated rows (endless new query phrases never allocate per
entry), and DDS endpoints release oversized samples instead of keeping buffers at their size."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from clip2scene_ros.resources import VectorLRU


def test_vector_lru_is_bounded_and_reuses_its_rows():
    store = VectorLRU(8)
    for i in range(8):
        store.put(f"k{i}", np.full(64, i, np.float32))
    slab = store._slabs[64][1]
    rows = {store._slots[k][1] for k in store._slots}
    for i in range(8, 5000):
        store.put(f"k{i}", np.full(64, i, np.float32))
        if i % 4 == 0:  # used again within every 8 puts: never the least recent
            assert store.get("k7") is not None
    assert len(store) == 8
    assert store._slabs[64][1] is slab and len(store._slabs) == 1, "the slab is allocated once"
    assert {store._slots[k][1] for k in store._slots} == rows, "evicted rows are reused"
    assert store.get("k4999")[0] == 4999 and "k7" in store and "k8" not in store


def test_vector_lru_returns_copies_and_keeps_lengths_apart():
    store = VectorLRU(2)
    store.put("a", np.arange(4, dtype=np.float32))
    got = store.get("a")
    got[:] = -1  # a caller's copy, not the stored row
    store.put("b", [[1.0, 2.0]])  # flattened; another length gets its own slab
    assert store.get("a").tolist() == [0, 1, 2, 3] and store.get("b").tolist() == [1, 2]
    store.put("a", np.zeros(4, np.float32))  # replaced in place, not a second entry
    store.put("c", np.ones(2, np.float32))  # evicts b, the least recent
    assert len(store) == 2 and store.get("b") is None and store.get("a").sum() == 0
    assert len(store._free[4]) + len(store._free[2]) == 2  # capacity rows per length, 2 in use
    store.clear()
    assert len(store) == 0 and store.get("c") is None
    with pytest.raises(ValueError, match="capacity"):
        VectorLRU(0)
    with pytest.raises(ValueError, match="empty"):
        store.put("e", np.zeros(0))


def test_vector_lru_under_concurrent_writers():
    store = VectorLRU(16)

    def write(base: int) -> None:
        for i in range(2000):
            store.put((base, i), np.full(8, base, np.float32))
            got = store.get((base, i - 1))
            assert got is None or (got == base).all()  # a row never mixes two writers' vectors

    threads = [threading.Thread(target=write, args=(b,)) for b in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 16 and sorted(len(f) for f in store._free.values()) == [0]


DDS_RETAINED = """
import ctypes, gc, time
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from clip2scene_ros.nodes.conversions import xyz_cloud
from clip2scene_ros.resources import fix_malloc_thresholds, trim_heap

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def in_use():
    gc.collect()
    trim_heap()
    m = libc.mallinfo2()
    return (m.uordblks + m.hblkhd) / 2**20

fix_malloc_thresholds()
rclpy.init()
node = rclpy.create_node("retained")
pub = node.create_publisher(PointCloud2, "cloud", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
rng = np.random.default_rng(0)
def publish(n):
    for _ in range(5):
        pub.publish(xyz_cloud(Header(frame_id="x"), rng.normal(0, 10, (n, 4)).astype(np.float32)))
    time.sleep(0.2)
publish(35_000)
before = in_use()
publish(350_000)  # one oversized cloud: 5.6 MB samples
publish(35_000)
print(in_use() - before)
"""


def test_dds_endpoints_release_oversized_samples(ros_env):
    # Fast DDS keeps sample buffers grown to the largest sample ever published unless the shipped
    # profile's DYNAMIC history memory applies (RMW_FASTRTPS_USE_QOS_FROM_XML, set with the profile).
    def retained_mb(env: dict[str, str]) -> float:
        out = subprocess.run([sys.executable, "-c", DDS_RETAINED], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return float(out.stdout.split()[-1])

    assert Path(ros_env["FASTDDS_DEFAULT_PROFILES_FILE"]).name == "fastdds_shm_64mb.xml"
    assert ros_env["RMW_FASTRTPS_USE_QOS_FROM_XML"] == "1"
    assert retained_mb(ros_env) < 2.0
    rmw_default = {k: v for k, v in ros_env.items() if k != "RMW_FASTRTPS_USE_QOS_FROM_XML"}
    assert retained_mb(rmw_default) > 4.0, "without the profile's memory policy the big buffers stay"
