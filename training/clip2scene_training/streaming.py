"""Samples streamed through ``torch.utils.data.DataLoader`` for pre-training and fine-tuning.

Nothing is kept between steps: each item is read (from the target cache, or from the raw dataset
with the teacher run in the worker), augmented and handed over, so peak memory depends on the batch
and the prefetch depth, not on the dataset's size. Items are indexed by ``(sample, epoch)`` (see
``trainer.StepBatchSampler``), so augmentation is seeded per (epoch, sample, sweep) wherever the item
is loaded. A sample whose files are corrupt or missing is skipped with a warning and replaced by
the next readable one (ranks stay in step: every micro-batch keeps its size); the skipped indices
travel with the batch so the main process can count and summarise them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clip2scene_training.target_cache import CorruptSample, TargetCache
from clip2scene_training.targets import SampleTargets, SweepTargets, group_targets, teacher_targets
from clip2scene_training.trainer import augment_points

__all__ = ["PretrainItems", "FinetuneItems", "SkipLog", "make_loader", "READ_ERRORS"]

LOG = logging.getLogger("clip2scene.data")
# What reading a damaged sample raises: truncated arrays (ValueError from reshape), missing or
# unreadable files and images (OSError, PIL's UnidentifiedImageError is one), cache entries.
READ_ERRORS = (CorruptSample, OSError, ValueError, EOFError)
MAX_SUBSTITUTES = 16


@dataclass
class SkipLog:
    """Skipped samples seen by the main process: index -> reason (each counted once)."""

    reasons: dict[int, str] = field(default_factory=dict)

    def add(self, skipped: list[tuple[int, str]]) -> None:
        for index, reason in skipped:
            if index not in self.reasons:
                self.reasons[index] = reason

    def summary(self) -> dict[str, Any]:
        return {"count": len(self.reasons), "samples": {str(k): v for k, v in sorted(self.reasons.items())}}


class _SkippingItems(Dataset):
    """``items[(i, epoch)]``: sample i, or the next readable one when i cannot be read."""

    def __init__(self, n: int, seed: int, augment: bool, aug=None):
        self.n, self.seed, self.augment, self.aug = n, seed, augment, aug  # aug: augment.AugmentConfig

    def __len__(self) -> int:
        return self.n

    def _load(self, index: int) -> Any:
        raise NotImplementedError

    def _finish(self, index: int, loaded: Any, epoch: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, item: tuple[int, int]) -> dict:
        i, epoch = item
        skipped: list[tuple[int, str]] = []
        for attempt in range(min(MAX_SUBSTITUTES, self.n)):
            j = (i + attempt) % self.n
            try:
                loaded = self._load(j)
            except READ_ERRORS as e:
                LOG.warning("sample %d skipped: %s", j, e)
                skipped.append((j, f"{type(e).__name__}: {e}"))
                continue
            out = self._finish(j, loaded, epoch)
            out["skipped"] = skipped
            return out
        raise RuntimeError(f"{len(skipped)} consecutive samples from {i} are unreadable: {skipped[-1][1]}")

    def _augment(self, points: np.ndarray, index: int, epoch: int, sweep: int | None = None) -> np.ndarray:
        if not self.augment:
            return points
        key = [self.seed, epoch, index] if sweep is None else [self.seed, epoch, index, sweep]
        return augment_points(points, np.random.default_rng(key), self.aug)


class PretrainItems(_SkippingItems):
    """Sweeps' points and teacher targets of one sample: from the cache when present, else from the
    raw dataset and the teacher (in this worker), written through to the cache when one is given."""

    def __init__(self, dataset, cache: TargetCache | None, teacher, text: torch.Tensor, grid_size: float,
                 max_per_grid: int, seed: int, augment: bool, write_through: bool = True, aug=None,
                 num_samples: int | None = None):  # fmt: skip
        super().__init__(len(dataset) if num_samples is None else num_samples, seed, augment, aug)
        self.dataset, self.cache, self.teacher, self.text = dataset, cache, teacher, text
        self.grid_size, self.max_per_grid, self.write_through = grid_size, max_per_grid, write_through

    def _load(self, index: int):
        if self.cache is not None and self.cache.has(index):
            try:
                c = self.cache.read(index)
                return c.points, c.targets
            except CorruptSample as e:
                if self.teacher is None or self.dataset is None or not self.write_through:
                    raise
                LOG.warning("%s; recomputing it", e)  # a damaged cache entry heals from the raw sample
        if self.dataset is None:
            raise CorruptSample(f"sample {index} is not in the target cache and the raw dataset is not open")
        sample = self.dataset[index]  # raw files + pairing
        sweeps = teacher_targets(self.teacher, self.text, sample)
        points = [sw.points for sw in sample.sweeps]
        if self.cache is not None and self.write_through:
            self.cache.write(index, points, sweeps, sample.token)
        return points, sweeps

    def _finish(self, index: int, loaded, epoch: int) -> dict:
        points, sweeps = loaded
        targets = group_targets(points, sweeps, self.grid_size, self.max_per_grid, self.seed + index)
        clouds = [
            torch.from_numpy(np.ascontiguousarray(self._augment(p, index, epoch, k))) for k, p in enumerate(points)
        ]
        return {"clouds": clouds, "targets": targets, "index": index}


class FinetuneItems(_SkippingItems):
    """Points and labels (0..C-1, ignore -1) of one labelled sample, no cameras needed."""

    def __init__(self, dataset, indices: list[int], seed: int, augment: bool):
        super().__init__(len(indices), seed, augment)
        self.dataset, self.indices = dataset, indices

    def _load(self, index: int):
        s = self.dataset.load(self.indices[index])
        if s.labels is None:
            raise ValueError(f"sample {s.token} has no labels; fine-tuning needs a labelled split")
        return s.points, s.labels

    def _finish(self, index: int, loaded, epoch: int) -> dict:
        points, labels = loaded
        pts = np.ascontiguousarray(self._augment(points, index, epoch))
        return {"clouds": [torch.from_numpy(pts)], "labels": torch.from_numpy(labels.astype(np.int64) - 1)}


def collate(items: list[dict]) -> dict:
    """Variable-size clouds stay a list (the model's input contract voxelizes each one)."""
    out: dict[str, Any] = {"clouds": [c for it in items for c in it["clouds"]], "skipped": []}
    for it in items:
        out["skipped"].extend(it["skipped"])
    if "targets" in items[0]:
        out["samples"] = [(len(it["clouds"]), it["targets"]) for it in items]
    if "labels" in items[0]:
        out["labels"] = [it["labels"] for it in items]
    return out


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers read and pair; the main process owns the cores for the model


def make_loader(items: Dataset, batch_sampler, loader_cfg, device: str,
                worker_init: Callable[[int], None] = _worker_init) -> DataLoader:  # fmt: skip
    """DataLoader over ``batch_sampler`` (micro-batches of (index, epoch)) with the configured workers,
    prefetch depth, persistent workers and pinned memory (CUDA only)."""
    pin = device.startswith("cuda") if loader_cfg.pin_memory == "auto" else loader_cfg.pin_memory == "on"
    kwargs: dict[str, Any] = {}
    if loader_cfg.workers > 0:
        kwargs = {
            "prefetch_factor": loader_cfg.prefetch,
            "persistent_workers": loader_cfg.persistent_workers,
            "worker_init_fn": worker_init,
        }
    return DataLoader(
        items, batch_sampler=batch_sampler, num_workers=loader_cfg.workers, collate_fn=collate, pin_memory=pin,
        **kwargs,
    )  # fmt: skip


def to_device(batch: dict, device: str) -> dict:
    non_blocking = device.startswith("cuda")
    batch["clouds"] = [c.to(device, non_blocking=non_blocking) for c in batch["clouds"]]
    if "labels" in batch:
        batch["labels"] = [y.to(device, non_blocking=non_blocking) for y in batch["labels"]]
    if "samples" in batch and device != "cpu":
        batch["samples"] = [
            (n, SampleTargets([SweepTargets(*(x.to(device) for x in astuple_shallow(t))) for t in tg.sweeps],
                              tg.groups.to(device)))
            for n, tg in batch["samples"]
        ]  # fmt: skip
    return batch


def astuple_shallow(t: SweepTargets) -> tuple:
    return (t.point_index, t.pixel_feats, t.pseudo, t.score)

