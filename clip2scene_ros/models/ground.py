"""Derived input feature ``height_above_ground``: each voxel's height over the local ground.

Real roads are not level in the sensor's frame (slopes, camber, the car's pitch: 2-3 % grades move
the ground by 0.5-1 m at 30 m), so a model reading the absolute height ``z`` mistakes raised road
for sidewalk and low terrain for road. The local ground is estimated from the cloud itself, so the
feature needs no calibration and is computed the same way in training, evaluation and the node:

1. the lowest voxel in every ``cell`` x ``cell`` column of a bird's-eye grid;
2. the lowest of those over a ``window`` x ``window`` block of columns (cars, bushes and walls
   cover whole columns, but the road beside them is within a few metres);
3. feature = voxel height - that ground, clipped to [-2, 10] m (pits and noise below the road,
   nothing of interest far above it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

HEIGHT_ABOVE_GROUND = "height_above_ground"
CELL_M = 2.0
WINDOW = 5  # columns: a 10 m block, wider than a lane plus parked cars
MAX_CELLS = 512  # columns per side of one cloud's grid (1 km at 2 m): farther returns share edge cells


def height_above_ground(xyz: Tensor, batch: Tensor, cell_m: float = CELL_M, window: int = WINDOW) -> Tensor:
    """Height [N] of each voxel (mean position ``xyz`` [N, 3], cloud index ``batch`` [N]) above the
    lowest voxel within ``window`` x ``window`` bird's-eye columns of ``cell_m`` around it."""
    if len(xyz) == 0:
        return xyz.new_zeros(0)
    with torch.no_grad():
        xy = torch.floor(xyz[:, :2].float() / cell_m).long()
        lo = xy.min(0).values
        ij = (xy - lo).clamp(max=MAX_CELLS - 1)
        h, w = int(ij[:, 0].max()) + 1, int(ij[:, 1].max()) + 1
        b = batch.long()
        nb = int(b.max()) + 1
        flat = (b * h + ij[:, 0]) * w + ij[:, 1]
        z = xyz[:, 2].float()
        grid = torch.full((nb * h * w,), float("inf"), dtype=z.dtype, device=z.device)
        grid.scatter_reduce_(0, flat, z, reduce="amin", include_self=True)
        # min over the window = -max_pool(-grid); empty columns (+inf) never win
        pooled = -F.max_pool2d(-grid.view(nb, 1, h, w), window, stride=1, padding=window // 2)
        ground = pooled.view(-1)[flat]
    return (xyz[:, 2] - ground.to(xyz.dtype)).clamp(-2.0, 10.0)
