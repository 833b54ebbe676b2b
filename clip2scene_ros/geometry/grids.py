"""Regular-grid grouping of a (merged, registered) cloud: the cells g_n of CLIP2Scene Eq. 2-4."""

from __future__ import annotations

import numpy as np

__all__ = ["grid_groups"]


def grid_groups(
    points_xyz: np.ndarray,
    grid_size: float,
    max_per_group: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Group id per point ([P] int64, consecutive from 0) for cubic cells of edge ``grid_size``.

    ``max_per_group`` caps the members of a cell (upstream keeps 8); surplus members get -1. With
    ``rng`` the kept members are a random subset, otherwise the first ones in input order.
    """
    if grid_size <= 0:
        raise ValueError(f"grid_size must be positive, got {grid_size}")
    pts = np.asarray(points_xyz, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros(0, np.int64)
    cells = np.floor(pts[:, :3] / grid_size).astype(np.int64)
    _, group = np.unique(cells, axis=0, return_inverse=True)
    group = group.reshape(-1).astype(np.int64)
    if max_per_group is None:
        return group
    order = rng.permutation(len(group)) if rng is not None else np.arange(len(group))
    # Rank of each point within its group, in `order`: stable sort by group.
    sorted_idx = order[np.argsort(group[order], kind="stable")]
    g_sorted = group[sorted_idx]
    starts = np.r_[0, np.nonzero(np.diff(g_sorted))[0] + 1]
    rank = np.arange(len(g_sorted)) - np.repeat(starts, np.diff(np.r_[starts, len(g_sorted)]))
    out = group.copy()
    out[sorted_idx[rank >= max_per_group]] = -1
    return out
