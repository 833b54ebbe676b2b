"""Point clouds to voxels: integer coordinates, mean-pooled features and the point-to-voxel map.

Coordinates are packed into one int64 key per voxel (batch, x, y, z), so that voxel sets can be
uniqued, sorted and searched with plain torch operations on any device. The packing bounds the
coordinate range; :data:`COORD_LIMIT` is checked and named in the error when exceeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

AXIS_BITS = 18  # bits per spatial axis in a packed key
BATCH_BITS = 9  # 3 * 18 + 9 = 63 bits: keys stay non-negative int64
_BIAS = 1 << (AXIS_BITS - 1)
# Margin below the packing range so that neighbour queries (offset +-k//2) never overflow a field.
COORD_LIMIT = _BIAS - 1024
MAX_BATCH = 1 << BATCH_BITS
_SHIFT_X = 2 * AXIS_BITS
_SHIFT_B = 3 * AXIS_BITS
_MASK = (1 << AXIS_BITS) - 1


def pack_keys(coords: Tensor) -> Tensor:
    """(batch, x, y, z) int64 [N, 4] -> int64 keys [N]; ordering of keys = lexicographic ordering."""
    c = coords.long()
    return (
        (c[:, 0] << _SHIFT_B) | ((c[:, 1] + _BIAS) << _SHIFT_X) | ((c[:, 2] + _BIAS) << AXIS_BITS) | (c[:, 3] + _BIAS)
    )


def unpack_keys(keys: Tensor) -> Tensor:
    """Inverse of :func:`pack_keys`."""
    b = keys >> _SHIFT_B
    x = ((keys >> _SHIFT_X) & _MASK) - _BIAS
    y = ((keys >> AXIS_BITS) & _MASK) - _BIAS
    z = (keys & _MASK) - _BIAS
    return torch.stack([b, x, y, z], dim=1)


def offset_key(dx: int, dy: int, dz: int) -> int:
    """Key delta of a spatial offset (valid while the shifted coordinate stays in range)."""
    return (dx << _SHIFT_X) + (dy << AXIS_BITS) + dz


def check_coords(coords: Tensor, what: str = "voxel coordinates") -> None:
    """Raise a clear error when coordinates fall outside the hashable range or batch limit."""
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"{what} must have shape [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
    if coords.numel() == 0:
        return
    spatial = coords[:, 1:]
    lo, hi = int(spatial.min()), int(spatial.max())
    if lo < -COORD_LIMIT or hi > COORD_LIMIT:
        raise ValueError(
            f"{what} span [{lo}, {hi}], beyond the hashable range of +-{COORD_LIMIT} voxels per axis; "
            "crop the point cloud to a smaller range or use a larger voxel_size"
        )
    bmin, bmax = int(coords[:, 0].min()), int(coords[:, 0].max())
    if bmin < 0 or bmax >= MAX_BATCH:
        raise ValueError(f"batch indices must lie in [0, {MAX_BATCH - 1}], got [{bmin}, {bmax}]")


@dataclass
class Voxels:
    """Result of :func:`voxelize`.

    coords: int64 [N, 4] (batch, x, y, z), sorted by (batch, x, y, z).
    feats: float [N, C], the mean of the input columns (x, y, z, features...) over each voxel's points.
    point_to_voxel: int64 [P], voxel row of every input point, -1 for dropped (NaN/Inf) points.
    num_dropped: number of points dropped because a column was NaN or Inf.
    counts: int64 [N], points per voxel.
    batch_size: number of clouds.
    """

    coords: Tensor
    feats: Tensor
    point_to_voxel: Tensor
    num_dropped: int
    counts: Tensor
    batch_size: int

    def __len__(self) -> int:
        return int(self.coords.shape[0])


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


def voxelize(
    points: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    voxel_size: float | Sequence[float],
    *,
    features: Tensor | np.ndarray | None = None,
    batch: Tensor | np.ndarray | None = None,
) -> Voxels:
    """Voxelize one cloud [P, 3+F], a list of clouds (batch index = list position), or a
    concatenated cloud with a ``batch`` index vector [P].

    ``features`` [P, F'] may be passed separately; it is appended to the point columns before
    pooling. NaN/Inf points are dropped and counted; an empty cloud gives an empty result.
    Differentiable with respect to the point columns (mean pooling is a sum and a division).
    """
    if isinstance(points, (list, tuple)):
        if batch is not None:
            raise ValueError("pass either a list of clouds or a batch index vector, not both")
        clouds = [_as_tensor(p) for p in points]
        if not clouds:
            raise ValueError("voxelize() got an empty list of clouds")
        for i, c in enumerate(clouds):
            if c.ndim != 2 or c.shape[1] < 3:
                raise ValueError(f"cloud {i} must have shape [P, 3+F], got {tuple(c.shape)}")
        widths = {c.shape[1] for c in clouds}
        if len(widths) > 1:
            raise ValueError(f"all clouds in a batch need the same number of columns, got {sorted(widths)}")
        batch_t = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, c in enumerate(clouds)])
        pts = torch.cat(clouds, 0)
        batch_size = len(clouds)
    else:
        pts = _as_tensor(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"points must have shape [P, 3+F], got {tuple(pts.shape)}")
        if batch is None:
            batch_t = torch.zeros(len(pts), dtype=torch.long)
            batch_size = 1
        else:
            batch_t = _as_tensor(batch).long().reshape(-1)
            if len(batch_t) != len(pts):
                raise ValueError(
                    f"batch index has {len(batch_t)} entries but there are {len(pts)} points; "
                    "pass one batch index per point"
                )
            batch_size = int(batch_t.max()) + 1 if len(batch_t) else 1
    if features is not None:
        f = _as_tensor(features)
        if f.ndim == 1:
            f = f[:, None]
        if len(f) != len(pts):
            raise ValueError(
                f"features have {len(f)} rows but there are {len(pts)} points (coordinates); "
                "pass one feature row per point"
            )
        pts = torch.cat([pts, f.to(pts.dtype)], 1)
    if not pts.is_floating_point():
        pts = pts.float()
    device = pts.device
    batch_t = batch_t.to(device)

    if isinstance(voxel_size, (int, float)):
        vs = torch.full((3,), float(voxel_size), dtype=pts.dtype, device=device)
    else:
        vs = torch.as_tensor(list(voxel_size), dtype=pts.dtype, device=device)
        if vs.shape != (3,):
            raise ValueError(f"voxel_size must be a number or 3 numbers, got {voxel_size!r}")
    if bool((vs <= 0).any()):
        raise ValueError(f"voxel_size must be positive, got {voxel_size!r}")

    finite = torch.isfinite(pts).all(1)
    num_dropped = int((~finite).sum())
    keep = finite.nonzero().squeeze(1)
    kept = pts.index_select(0, keep)
    width = pts.shape[1]
    point_to_voxel = torch.full((len(pts),), -1, dtype=torch.long, device=device)
    if len(kept) == 0:
        return Voxels(
            coords=torch.zeros((0, 4), dtype=torch.long, device=device),
            feats=pts.new_zeros((0, width)),
            point_to_voxel=point_to_voxel,
            num_dropped=num_dropped,
            counts=torch.zeros(0, dtype=torch.long, device=device),
            batch_size=batch_size,
        )
    grid = torch.floor(kept[:, :3].detach() / vs).long()
    coords = torch.cat([batch_t.index_select(0, keep)[:, None], grid], 1)
    check_coords(coords, "voxel coordinates (floor(xyz / voxel_size))")
    keys = pack_keys(coords)
    ukeys, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    sums = kept.new_zeros((len(ukeys), width)).index_add(0, inverse, kept)
    feats = sums / counts[:, None].to(sums.dtype)
    point_to_voxel[keep] = inverse
    return Voxels(
        coords=unpack_keys(ukeys),
        feats=feats,
        point_to_voxel=point_to_voxel,
        num_dropped=num_dropped,
        counts=counts,
        batch_size=batch_size,
    )
