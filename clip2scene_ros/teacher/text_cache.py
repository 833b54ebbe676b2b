"""Text-embedding cache keyed by model content hash + prompt templates + phrase.

Each phrase's template-ensembled embedding is stored once (in memory and, optionally, as a small
safetensors file on disk), so vocabularies that share names and repeated online queries are free.
Both stores are bounded: any DDS peer can send new query phrases to a running node, so memory is an
LRU of ``max_entries`` phrases and the directory is trimmed (oldest files first) to ``max_disk_bytes``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from clip2scene_ros.resources import VectorLRU


def default_cache_dir() -> Path:
    """``$CLIP2SCENE_CACHE_DIR`` or ``~/.cache/clip2scene``."""
    return Path(os.environ.get("CLIP2SCENE_CACHE_DIR", Path.home() / ".cache" / "clip2scene")).expanduser()


def text_key(model_id: str, templates: Sequence[str], phrase: str) -> str:
    h = hashlib.sha256()
    for part in (model_id, "\x1f".join(templates), phrase):
        h.update(part.encode())
        h.update(b"\x1e")
    return h.hexdigest()[:32]


DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_DISK_BYTES = 64 * 1024 * 1024


class TextEmbeddingCache:
    """In-memory LRU + size-bounded on-disk store of phrase embeddings [D] (float32). Thread-safe."""

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        persist: bool = True,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES,
    ):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if max_disk_bytes < 0:
            raise ValueError(f"max_disk_bytes must be >= 0 (0 = nothing on disk), got {max_disk_bytes}")
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir() / "text"
        self.persist = persist and max_disk_bytes > 0
        self.max_entries = int(max_entries)
        self.max_disk_bytes = int(max_disk_bytes)
        self._memory = VectorLRU(self.max_entries)  # preallocated rows: no heap fragmentation per phrase
        self._disk_bytes: int | None = None  # running estimate; scanned once, then updated per write
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evicted_files = 0

    def get(self, key: str) -> torch.Tensor | None:
        emb = self._memory.get(key)
        if emb is not None:
            with self._lock:
                self.hits += 1
            return torch.from_numpy(emb)
        path = self.directory / f"{key}.safetensors"
        if self.persist and path.is_file():
            from safetensors.torch import load_file

            try:
                emb = load_file(str(path))["embedding"]
            except Exception:  # a truncated file from a killed process: recompute it
                emb = None
            if emb is not None:
                self._memory.put(key, emb.float().numpy())
                with self._lock:
                    self.hits += 1
                return emb.float().reshape(-1)
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, embedding: torch.Tensor) -> None:
        emb = embedding.detach().float().cpu().contiguous()
        self._memory.put(key, emb.numpy())
        if not self.persist:
            return
        from safetensors.torch import save_file

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            os.close(fd)
            save_file({"embedding": emb}, tmp)
            size = os.path.getsize(tmp)
            os.replace(tmp, self.directory / f"{key}.safetensors")  # atomic: readers never see halves
            with self._lock:
                if self._disk_bytes is None:
                    self._disk_bytes = self._scan()[1]
                else:
                    self._disk_bytes += size
                if self._disk_bytes > self.max_disk_bytes:
                    self._trim_disk()
        except OSError:
            self.persist = False  # read-only home on a robot: keep the in-memory cache only

    def disk_usage(self) -> int:
        """Bytes of embedding files in the directory now."""
        return self._scan()[1]

    def clear_memory(self) -> None:
        self._memory.clear()

    def __len__(self) -> int:
        return len(self._memory)

    def _scan(self) -> tuple[list[tuple[float, int, Path]], int]:
        files = []
        try:
            for entry in os.scandir(self.directory):
                if entry.name.endswith(".safetensors"):
                    try:
                        st = entry.stat()
                    except OSError:  # removed by another process meanwhile
                        continue
                    files.append((st.st_mtime, st.st_size, Path(entry.path)))
        except FileNotFoundError:
            pass
        return files, sum(f[1] for f in files)

    def _trim_disk(self) -> None:
        """Delete the oldest files until the directory holds at most 3/4 of the quota (hysteresis:
        not one scan per write once full). Other processes may share the directory, so sizes are
        re-read from disk."""
        files, total = self._scan()
        target = self.max_disk_bytes * 3 // 4
        for _mtime, size, path in sorted(files):
            if total <= target:
                break
            try:
                path.unlink()
                self.evicted_files += 1
            except OSError:
                pass
            total -= size
        self._disk_bytes = total
