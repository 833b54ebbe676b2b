"""The bounded vector store behind the text-embedding caches: it stays within its capacity and
reuses its preallocated rows, so endless new query phrases never allocate per entry."""

from __future__ import annotations

import threading

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
