"""Dense-feature cache for training: teacher features computed once per image, stored as fp16.

Layout of a cache directory::

    meta.json            fingerprint (teacher model hash + dense options), feature shape, dtype
    index.json           image key -> [chunk, row]
    chunk_000000.npy     float16 [chunk_size, D, h, w], read back memory-mapped

Opening a cache whose fingerprint differs from the teacher's (other weights, input size, tiling or
key smoothing) wipes it: stale features are never served.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .teacher import ImageBatch, Teacher

FORMAT_VERSION = 1


def teacher_fingerprint(teacher: Teacher) -> str:
    cfg = teacher.config
    parts = [
        teacher.model_id,
        str(cfg.input_size),
        str(cfg.tile),
        str(cfg.key_smoothing),
        str(FORMAT_VERSION),
        f"overlap={cfg.tile_overlap}|flip={cfg.flip_average}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


class DenseFeatureCache:
    """fp16 dense features per image key, chunked .npy files opened with np.load(mmap_mode='r')."""

    def __init__(self, directory: str | os.PathLike, teacher: Teacher, chunk_size: int = 256):
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.directory = Path(directory)
        self.teacher = teacher
        self.chunk_size = int(chunk_size)
        self.fingerprint = teacher_fingerprint(teacher)
        self.hits = 0
        self.misses = 0
        self.invalidated = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, tuple[int, int]] = {}
        self._shape: tuple[int, ...] | None = None
        self._chunks: dict[int, np.ndarray] = {}  # read-only memmaps
        self._writer: np.memmap | None = None
        self._writer_chunk = -1
        self._fill = 0
        self._open()

    # -- bookkeeping -------------------------------------------------------------------------
    def _open(self) -> None:
        meta_path = self.directory / "meta.json"
        meta = None
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError:
                meta = None
        if (
            meta is None
            or meta.get("fingerprint") != self.fingerprint
            or meta.get("chunk_size") != self.chunk_size
        ):
            self.invalidated = meta is not None
            self.clear()
            return
        self._shape = tuple(meta["shape"]) if meta.get("shape") else None
        index_path = self.directory / "index.json"
        if index_path.is_file():
            self._index = {k: (int(c), int(r)) for k, (c, r) in json.loads(index_path.read_text()).items()}
        if self._index:
            last = max(c for c, _ in self._index.values())
            self._writer_chunk = last
            self._fill = 1 + max(r for c, r in self._index.values() if c == last)

    def clear(self) -> None:
        """Delete all stored features (keeps the directory)."""
        self._close_writer()
        self._chunks.clear()
        for path in self.directory.glob("chunk_*.npy"):
            path.unlink()
        for name in ("index.json", "meta.json"):
            (self.directory / name).unlink(missing_ok=True)
        self._index, self._shape, self._writer_chunk, self._fill = {}, None, -1, 0
        self._write_meta()

    def _write_meta(self) -> None:
        meta = {
            "fingerprint": self.fingerprint,
            "model_id": self.teacher.model_id,
            "input_size": self.teacher.config.input_size,
            "tile": self.teacher.config.tile,
            "tile_overlap": self.teacher.config.tile_overlap,
            "flip_average": self.teacher.config.flip_average,
            "chunk_size": self.chunk_size,
            "shape": list(self._shape) if self._shape else None,
            "dtype": "float16",
            "version": FORMAT_VERSION,
        }
        (self.directory / "meta.json").write_text(json.dumps(meta, indent=1))

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer = None

    def flush(self) -> None:
        """Persist pending rows and the index (called after every put)."""
        if self._writer is not None:
            self._writer.flush()
        tmp = self.directory / "index.json.tmp"
        tmp.write_text(json.dumps(self._index))
        os.replace(tmp, self.directory / "index.json")

    def _chunk_path(self, chunk: int) -> Path:
        return self.directory / f"chunk_{chunk:06d}.npy"

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str) -> np.ndarray | None:
        """float16 [D, h, w] view of a stored feature map, or None."""
        loc = self._index.get(key)
        if loc is None:
            return None
        chunk, row = loc
        if chunk == self._writer_chunk and self._writer is not None:
            return self._writer[row]
        if chunk not in self._chunks:
            self._chunks[chunk] = np.load(self._chunk_path(chunk), mmap_mode="r")
        return self._chunks[chunk][row]

    def put(self, keys: Sequence[str], features: torch.Tensor | np.ndarray) -> None:
        """Store features [B, D, h, w] under keys (converted to float16)."""
        feats = (
            features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        )
        if feats.ndim != 4 or len(keys) != feats.shape[0]:
            raise ValueError(f"put needs features [B,D,h,w] for {len(keys)} keys, got {feats.shape}")
        if self._shape is None:
            self._shape = tuple(feats.shape[1:])
            self._write_meta()
        elif tuple(feats.shape[1:]) != self._shape:
            raise ValueError(f"feature shape {feats.shape[1:]} differs from the cache's {self._shape}")
        for key, feat in zip(keys, feats, strict=True):
            if key in self._index:
                continue
            if self._writer is None or self._fill >= self.chunk_size:
                self._new_writer()
            self._writer[self._fill] = feat.astype(np.float16)
            self._index[key] = (self._writer_chunk, self._fill)
            self._fill += 1
        self.flush()

    def _new_writer(self) -> None:
        if self._writer is not None and self._fill < self.chunk_size:
            return
        self._close_writer()
        if self._writer_chunk >= 0 and self._fill < self.chunk_size:
            # reopened cache whose last chunk has room: append to it
            self._writer = np.load(self._chunk_path(self._writer_chunk), mmap_mode="r+")
            self._chunks.pop(self._writer_chunk, None)
            return
        self._writer_chunk += 1
        self._fill = 0
        self._writer = np.lib.format.open_memmap(
            self._chunk_path(self._writer_chunk),
            mode="w+",
            dtype=np.float16,
            shape=(self.chunk_size, *self._shape),
        )

    def features(
        self,
        keys: Sequence[str],
        images: ImageBatch | Callable[[list[int]], ImageBatch],
    ) -> torch.Tensor:
        """float32 features [B, D, h, w] for keys; misses are computed with the teacher and stored.

        ``images`` is the batch itself or a function returning the images at the given positions
        (so a fully cached batch never loads its images).
        """
        stored = [self.get(k) for k in keys]
        missing = [i for i, s in enumerate(stored) if s is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            batch = images(missing) if callable(images) else np.asarray(images)[missing]
            fresh = self.teacher.dense_features(batch)
            self.put([keys[i] for i in missing], fresh.half())
            for j, i in enumerate(missing):
                stored[i] = fresh[j].half().numpy()
        return torch.from_numpy(np.stack([np.asarray(s) for s in stored])).float()
