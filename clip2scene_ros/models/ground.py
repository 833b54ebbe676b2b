"""Derived input feature ``height_above_ground``: each voxel's height over the local ground.

Real roads are not level in the sensor's frame (slopes, camber, the car's pitch: 2-5 % grades move
the ground by 0.5-1.5 m at 30 m), so a model reading the absolute height ``z`` mistakes raised road
for sidewalk and low terrain for road. The ground is estimated from the cloud itself, so the
feature needs no calibration and is computed the same way in training, evaluation and the node:

1. the lowest voxel in every ``cell`` x ``cell`` column of a bird's-eye grid, among voxels of at
   least ``MIN_POINTS`` points that lie no more than ``OUTLIER_M`` below a coarse ground (the
   median of 4 m column minima over 20 m): reflections seen "through" wet or glossy surfaces put
   clusters of returns metres below the road, and one of them would sink the ground around it;
2. a slope-limited lower envelope of those minima: ground(c) = min over columns c' of
   lowest(c') + ``max_slope`` x distance(c, c'), out to ``reach_m``. On any slope gentler than
   ``max_slope`` a column keeps its own lowest voxel, so sloped roads read ~0; columns whose ground
   is hidden (under cars, canopies, far walls) take the nearest visible ground plus the allowed rise;
3. feature = voxel height - ground, clipped to [-2, 10] m.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor

HEIGHT_ABOVE_GROUND = "height_above_ground"
CELL_M = 1.0
MAX_SLOPE = 0.08  # rise per metre the ground may have between columns (8 %: steep streets)
REACH_M = 10.0  # how far a column looks for visible ground
MIN_POINTS = 2
OUTLIER_M = 0.6  # deeper than this below the coarse ground: not ground (20 m of a 5 % slope is 0.5 m)
COARSE_CELL_M = 4.0
COARSE_WINDOW = 5
MAX_CELLS = 1024  # columns per side of one cloud's grid (1 km at 1 m): farther returns share edge cells


def height_above_ground(
    xyz: Tensor,
    batch: Tensor,
    counts: Tensor | None = None,
    cell_m: float = CELL_M,
    max_slope: float = MAX_SLOPE,
    reach_m: float = REACH_M,
) -> Tensor:
    """Height [N] of each voxel (mean position ``xyz`` [N, 3], cloud index ``batch`` [N], points per
    voxel ``counts`` [N] or None) above the slope-limited local ground (module docstring)."""
    if len(xyz) == 0:
        return xyz.new_zeros(0)
    with torch.no_grad():
        z = xyz[:, 2].float()
        inf = torch.full_like(z, float("inf"))
        support = z if counts is None else torch.where(counts >= MIN_POINTS, z, inf)
        # coarse ground: median of 4 m column minima over a 20 m block (empty columns ignored)
        coarse_grid, coarse_flat = _column_minima(xyz, batch, support, COARSE_CELL_M)
        pad = COARSE_WINDOW // 2
        padded = np.pad(coarse_grid, ((0, 0), (pad, pad), (pad, pad)), constant_values=np.inf)
        blocks = np.sort(sliding_window_view(padded, (COARSE_WINDOW, COARSE_WINDOW), axis=(1, 2)).reshape(
            *coarse_grid.shape, -1), axis=-1)  # fmt: skip
        mid = np.maximum((np.isfinite(blocks).sum(-1, keepdims=True) - 1) // 2, 0)  # +inf sorts last
        median = np.take_along_axis(blocks, mid, -1).reshape(-1)
        coarse = torch.from_numpy(median).to(z.device)[coarse_flat]
        support = torch.where(support >= coarse - OUTLIER_M, support, inf)  # inf - x = inf keeps all
        grid, flat = _column_minima(xyz, batch, support, cell_m)
        # lower envelope under an L1 cone (separable: rows, then columns)
        reach, rise = round(reach_m / cell_m), max_slope * cell_m
        grid = _cone_min(_cone_min(grid, 1, rise, reach), 2, rise, reach)
        ground = torch.from_numpy(grid.reshape(-1)).to(z.device)[flat]
        ground = torch.where(torch.isfinite(ground), ground, z)  # no supported voxel within reach: itself
    return (xyz[:, 2] - ground.to(xyz.dtype)).clamp(-2.0, 10.0)


def _column_minima(xyz: Tensor, batch: Tensor, z: Tensor, cell_m: float) -> tuple[np.ndarray, Tensor]:
    """Lowest ``z`` per bird's-eye column ([nb, h, w] float32, +inf where none) and each voxel's column."""
    xy = torch.floor(xyz[:, :2].float() / cell_m).long()
    ij = (xy - xy.min(0).values).clamp(max=MAX_CELLS - 1)
    h, w = int(ij[:, 0].max()) + 1, int(ij[:, 1].max()) + 1
    nb = int(batch.max()) + 1
    flat = (batch.long() * h + ij[:, 0]) * w + ij[:, 1]
    grid = torch.full((nb * h * w,), float("inf"), dtype=torch.float32, device=z.device)
    grid.scatter_reduce_(0, flat, z.float(), reduce="amin", include_self=True)
    return grid.cpu().numpy().reshape(nb, h, w), flat


def _cone_min(grid: np.ndarray, axis: int, rise: float, reach: int) -> np.ndarray:
    """min over shifts k in [-reach, reach] along ``axis`` of grid(. + k) + rise * |k|."""
    out = grid.copy()
    n = grid.shape[axis]
    for k in range(1, min(reach, n - 1) + 1):
        lo = [slice(None)] * grid.ndim
        hi = [slice(None)] * grid.ndim
        lo[axis], hi[axis] = slice(0, n - k), slice(k, n)
        lo, hi = tuple(lo), tuple(hi)
        np.minimum(out[lo], grid[hi] + rise * k, out=out[lo])
        np.minimum(out[hi], grid[lo] + rise * k, out=out[hi])
    return out
