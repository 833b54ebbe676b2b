"""Text-embedding cache keyed by model content hash + prompt templates + phrase.

Each phrase's template-ensembled embedding is stored once (in memory and, optionally, as a small
safetensors file on disk), so vocabularies that share names and repeated online queries are free.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch


def default_cache_dir() -> Path:
    """``$CLIP2SCENE_CACHE_DIR`` or ``~/.cache/clip2scene``."""
    return Path(os.environ.get("CLIP2SCENE_CACHE_DIR", Path.home() / ".cache" / "clip2scene")).expanduser()


def text_key(model_id: str, templates: Sequence[str], phrase: str) -> str:
    h = hashlib.sha256()
    for part in (model_id, "\x1f".join(templates), phrase):
        h.update(part.encode())
        h.update(b"\x1e")
    return h.hexdigest()[:32]


class TextEmbeddingCache:
    """In-memory + on-disk store of phrase embeddings [D] (float32)."""

    def __init__(self, directory: str | os.PathLike | None = None, persist: bool = True):
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "text"
        self.persist = persist
        self._memory: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        path = self.directory / f"{key}.safetensors"
        if self.persist and path.is_file():
            from safetensors.torch import load_file

            try:
                emb = load_file(str(path))["embedding"]
            except Exception:  # a truncated file from a killed process: recompute it
                emb = None
            if emb is not None:
                self._memory[key] = emb
                self.hits += 1
                return emb
        self.misses += 1
        return None

    def put(self, key: str, embedding: torch.Tensor) -> None:
        emb = embedding.detach().float().cpu().contiguous()
        self._memory[key] = emb
        if not self.persist:
            return
        from safetensors.torch import save_file

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            os.close(fd)
            save_file({"embedding": emb}, tmp)
            os.replace(tmp, self.directory / f"{key}.safetensors")  # atomic: readers never see halves
        except OSError:
            self.persist = False  # read-only home on a robot: keep the in-memory cache only

    def clear_memory(self) -> None:
        self._memory.clear()
