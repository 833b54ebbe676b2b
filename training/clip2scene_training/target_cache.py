"""On-disk cache of what pre-training needs from the frozen teacher, one file per sample.

Layout under ``<cache_dir>/<key>/``::

    manifest.json                 key inputs (teacher fingerprint, vocabulary, pairing, dataset)
    shard_00000/0000000.safetensors   sample 0: its sweeps' points (fp32) and, per paired point,
    shard_00000/0000001.safetensors   the point index, the teacher's pixel feature (fp16), its
    ...                               pseudo-class and score

The key hashes everything that changes the targets: the teacher's fingerprint (weights, input
size, tiling), the vocabulary's text embeddings, the pairing settings and the dataset's options. A
sample file is written to a temporary name and renamed, so a killed preparation leaves only
complete files and a rerun skips them. The points are stored too, so training reads one file per
sample and never touches the raw dataset (or re-runs the simulator) once the cache is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clip2scene_training.targets import SweepTargets

__all__ = ["CACHE_FORMAT", "TargetCache", "CorruptSample", "cache_key", "SHARD_SIZE"]

CACHE_FORMAT = 1
SHARD_SIZE = 1000  # samples per shard directory: keeps directories small on nuScenes-sized sets
LOG = logging.getLogger("clip2scene.targets")


class CorruptSample(RuntimeError):
    """A sample (raw files or cache entry) that cannot be read; training skips it with a warning."""


def cache_key(teacher_fingerprint: str, text: torch.Tensor, pairing: dict, dataset: dict) -> tuple[str, dict]:
    """(key, manifest) of a cache: a hash of the teacher, the vocabulary's embeddings, the pairing and
    the dataset options (which samples, how many sweeps)."""
    text_hash = hashlib.sha256(text.float().contiguous().numpy().tobytes()).hexdigest()[:16]
    manifest = {
        "format": CACHE_FORMAT,
        "teacher": teacher_fingerprint,
        "text": text_hash,
        "pairing": pairing,
        "dataset": dataset,
    }
    blob = json.dumps(manifest, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20], manifest


@dataclass
class CachedSample:
    points: list[np.ndarray]  # per sweep float32 [P, C]
    targets: list[SweepTargets]
    token: str


class TargetCache:
    def __init__(self, root: str | os.PathLike, key: str, manifest: dict | None = None):
        self.dir = Path(root) / key
        self.key = key
        if manifest is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / "manifest.json"
            if not path.is_file():
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(manifest, indent=1, default=str))
                os.replace(tmp, path)

    def manifest(self) -> dict:
        try:
            return json.loads((self.dir / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}

    def set_count(self, n: int) -> None:
        """Record the dataset's sample count, so a complete cache trains without opening the dataset."""
        meta = self.manifest()
        if meta.get("samples") == n:
            return
        meta["samples"] = n
        path = self.dir / "manifest.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, path)

    def complete_count(self) -> int | None:
        """The recorded sample count when every sample file is present, else None."""
        n = self.manifest().get("samples")
        return n if isinstance(n, int) and n > 0 and self.done(n) == n else None

    def path(self, index: int) -> Path:
        return self.dir / f"shard_{index // SHARD_SIZE:05d}" / f"{index:07d}.safetensors"

    def has(self, index: int) -> bool:
        return self.path(index).is_file()

    def done(self, n: int) -> int:
        return sum(self.has(i) for i in range(n))

    def write(self, index: int, points: list[np.ndarray], targets: list[SweepTargets], token: str) -> int:
        """Write sample ``index`` atomically; returns its size in bytes."""
        tensors: dict[str, torch.Tensor] = {}
        for k, (pts, t) in enumerate(zip(points, targets, strict=True)):
            tensors[f"points.{k}"] = torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32))
            tensors[f"index.{k}"] = t.point_index.to(torch.int32).contiguous()
            tensors[f"feats.{k}"] = t.pixel_feats.to(torch.float16).contiguous()
            tensors[f"pseudo.{k}"] = t.pseudo.to(torch.int16).contiguous()
            tensors[f"score.{k}"] = t.score.to(torch.float16).contiguous()
        path = self.path(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata={"token": token, "sweeps": str(len(points))})
        os.replace(tmp, path)
        return path.stat().st_size

    def read(self, index: int) -> CachedSample:
        path = self.path(index)
        if not path.is_file():
            raise CorruptSample(f"cache entry {path} is missing")
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
            n = int(meta["sweeps"])
            points, targets = [], []
            for k in range(n):
                points.append(tensors[f"points.{k}"].numpy())
                targets.append(
                    SweepTargets(
                        tensors[f"index.{k}"].long(),
                        tensors[f"feats.{k}"],
                        tensors[f"pseudo.{k}"].long(),
                        tensors[f"score.{k}"].float(),
                    )
                )
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
            raise CorruptSample(f"cache entry {path} is unreadable ({e}); delete it and rerun prepare") from e
        return CachedSample(points, targets, meta.get("token", str(index)))

    def bytes_on_disk(self) -> tuple[int, int]:
        """(total bytes of the sample files, number of sample files)."""
        files = list(self.dir.glob("shard_*/*.safetensors"))
        return sum(f.stat().st_size for f in files), len(files)
