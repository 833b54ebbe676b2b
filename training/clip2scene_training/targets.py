"""Teacher targets for the paired points: frozen pixel features and pixel pseudo-classes.

The teacher is frozen and pairing does not depend on the point augmentation, so targets are
computed once per sample (``clip2scene prepare targets`` writes them to an on-disk cache) and
reused every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clip2scene_ros.datasets import Sample
from clip2scene_ros.geometry import grid_groups

__all__ = ["SweepTargets", "SampleTargets", "compute_targets", "teacher_targets", "group_targets", "sample_pixels"]


@dataclass
class SweepTargets:
    point_index: torch.Tensor  # int64 [N] paired points of this sweep
    pixel_feats: torch.Tensor  # float16 [N, D] L2-normalised teacher features at the paired pixels
    pseudo: torch.Tensor  # int64 [N] teacher class (0-based index into the text matrix)
    score: torch.Tensor  # float32 [N] teacher cosine of the winning class


@dataclass
class SampleTargets:
    sweeps: list[SweepTargets]
    groups: torch.Tensor  # int64 [sum N] grid cell of each paired point over all sweeps (-1 = capped)


def sample_pixels(maps: torch.Tensor, uv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples [N, C] of ``maps`` [C, h, w] at continuous pixel coordinates ``uv`` [N, 2] of an
    image of ``size`` (H, W); the map covers the whole image (the teacher resizes, never crops)."""
    H, W = size
    grid = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1).to(maps.dtype)
    out = F.grid_sample(maps[None], grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def group_targets(
    points: list[np.ndarray], sweeps: list[SweepTargets], grid_size: float, max_per_grid: int, seed: int
) -> SampleTargets:
    """Grid cells g_n of Eq. 2-4 over the paired points of all sweeps (cheap: done at load time, so
    cached targets do not depend on the grid settings)."""
    merged = np.concatenate([p[t.point_index.numpy(), :3] for p, t in zip(points, sweeps, strict=True)])
    groups = grid_groups(merged, grid_size, max_per_grid, rng=np.random.default_rng([seed, 7]))
    return SampleTargets(sweeps, torch.from_numpy(groups))


@torch.no_grad()
def compute_targets(
    teacher, text: torch.Tensor, sample: Sample, grid_size: float = 0.1, max_per_grid: int = 8, seed: int = 0
) -> SampleTargets:
    """Teacher features, pseudo-classes and grid cells for every paired point of ``sample``."""
    sweeps = teacher_targets(teacher, text, sample)
    return group_targets([sw.points for sw in sample.sweeps], sweeps, grid_size, max_per_grid, seed)


@torch.no_grad()
def teacher_targets(teacher, text: torch.Tensor, sample: Sample) -> list[SweepTargets]:
    """Teacher features and pseudo-classes for every paired point of every sweep of ``sample``."""
    feats = []
    for cam in sample.cameras:  # per camera: images of one sample may differ in size (KITTI, ScanNet)
        feats.append(teacher.dense_features(cam.image[None])[0])
    text = text.to(feats[0].device) if feats else text
    logits = [teacher.logits(f[None], text)[0] for f in feats]
    out = []
    for sweep in sample.sweeps:
        pairs = sweep.pairs
        n = len(pairs)
        d = text.shape[1]
        pf = torch.zeros(n, d)
        lg = torch.zeros(n, text.shape[0])
        uv = torch.from_numpy(pairs.uv)
        cam_idx = torch.from_numpy(pairs.camera_index)
        for ci, cam in enumerate(sample.cameras):
            m = cam_idx == ci
            if m.any():
                size = cam.image.shape[:2]
                pf[m] = sample_pixels(feats[ci], uv[m], size).float().cpu()
                lg[m] = sample_pixels(logits[ci], uv[m], size).float().cpu()
        score, pseudo = lg.max(1) if n else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
        out.append(SweepTargets(torch.from_numpy(pairs.point_index), F.normalize(pf, dim=-1).half(), pseudo, score))
    return out
