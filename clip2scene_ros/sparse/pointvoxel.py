"""Point <-> voxel operations of point-voxel networks (SPVCNN), over tables built outside the network.

* Devoxelize at level ``s`` (stride ``2**s``): every point reads the 8 voxels around it, corner
  ``floor(p / 2**s) + (a, b, c)`` with ``a, b, c`` in {0, 1} (x slowest), with trilinear weights
  of its position ``p`` (in level-0 voxel units). Missing corners get weight 0 and the rest are
  renormalised by ``sum + 1e-8`` (torchsparse's ``calc_ti_weights``), so a point with no voxel
  around it reads zeros. The weights do not depend on the features: gradients reach the voxels.
* Voxelize at level ``s``: each voxel gets the mean of the features of the points inside it.

Eagerly the mean is an ``index_add`` over the points; exported graphs (no scatter operators) take
a padded table instead: per level-0 voxel the rows of its points (padded, summed), and the
coarser levels' sums follow through the k2s2 child tables the convolutions already use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from .kmap import KernelMaps, PaddedMaps, _pad_segments, _searchsorted, gather_sum, is_tracing
from .voxelize import pack_keys

WEIGHT_EPS = 1e-8  # torchsparse's renormalisation epsilon, kept for bit-level agreement


@dataclass(eq=False)
class PointMaps:
    """Per point-voxel level ``s`` (dict keys): see the module docstring.

    voxel[s]: int64 [P], row (level order) of each point's voxel.
    inv_count[s]: float32 [N_s, 1], 1 / points per voxel.
    corners[s]: int64 [P, 8], rows of the 8 corner voxels, ``N_s`` for a missing corner.
    weights[s]: float32 [P, 8], normalised trilinear weights (0 for missing corners).
    """

    voxel: dict[int, Tensor]
    inv_count: dict[int, Tensor]
    corners: dict[int, Tensor]
    weights: dict[int, Tensor]

    @property
    def num_points(self) -> int:
        return int(next(iter(self.voxel.values())).shape[0])

    def to(self, device: torch.device | str) -> PointMaps:
        fields = (getattr(self, f.name) for f in dataclasses.fields(self))
        return PointMaps(*({s: t.to(device) for s, t in d.items()} for d in fields))


@dataclass(eq=False)
class PaddedPointMaps:
    """The exported form: ``members`` [N_0, J] point rows per level-0 voxel (padded with P), and per
    level the inverse counts, corners and weights; voxel sums at coarser levels go through the
    padded k2s2 maps."""

    members: Tensor
    inv_count: dict[int, Tensor]
    corners: dict[int, Tensor]
    weights: dict[int, Tensor]


def _lookup(level_coords: Tensor, query: Tensor) -> Tensor:
    """Row of each query coordinate [Q, 4] in ``level_coords`` [N, 4] (level order); N if absent."""
    keys = pack_keys(level_coords)
    sorted_keys, perm = torch.sort(keys)
    q = pack_keys(query)
    n = keys.shape[0]
    if n == 0:
        return torch.full_like(q, 0)
    pos = _searchsorted(sorted_keys, q).to(q.device).clamp_(max=n - 1)
    hit = sorted_keys.index_select(0, pos) == q
    return torch.where(hit, perm.index_select(0, pos), torch.full_like(q, n))


_CORNERS = torch.tensor([(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.long)


def build_point_maps(
    points: Tensor, batch: Tensor, maps: KernelMaps, point_rows: Tensor, levels: tuple[int, ...]
) -> PointMaps:
    """Tables for the point-voxel levels ``levels`` of one forward.

    ``points`` float [P, 3]: positions in level-0 voxel units (``xyz / voxel_size``, finite);
    ``batch`` [P]; ``point_rows`` [P]: each point's level-0 row (the voxel ``floor(points)``).
    """
    device = points.device
    p = points.detach().float()
    voxel, inv_count, corners, weights = {}, {}, {}, {}
    rows = point_rows.long()
    for s in range(max(levels) + 1):
        if s > 0:  # the parent of a fine voxel: its k2s2 map knows it
            d = maps.down[s - 1]
            rows = d.parent_idx.index_select(0, d.inv.index_select(0, rows))
        if s not in levels:
            continue
        n = maps.coords[s].shape[0]
        voxel[s] = rows
        cnt = torch.bincount(rows, minlength=n).clamp_(min=1)
        inv_count[s] = (1.0 / cnt.float())[:, None]
        # torchsparse's arithmetic (calc_ti_weights), in level-0 units: near-zero weights of
        # points just below a voxel face are renormalised, so the same rounding matters
        st = float(1 << s)
        lo = torch.floor(p / st) * st
        hi = lo + st
        q = (lo / st).long()[:, None, :] + _CORNERS.to(device)[None]
        qc = torch.cat([batch.long()[:, None, None].expand(-1, 8, 1), q], 2).reshape(-1, 4)
        corner_rows = _lookup(maps.coords[s], qc).view(-1, 8)
        wa = torch.stack([hi - p, p - lo], 1)  # [P, 2, 3]: weight of corner offset 0 / 1 per axis
        c = _CORNERS.to(device)
        w = wa[:, c[:, 0], 0] * wa[:, c[:, 1], 1] * wa[:, c[:, 2], 2]
        if s:
            w = w / st**3
        w = torch.where(corner_rows < n, w, torch.zeros_like(w))
        weights[s] = w / (w.sum(1, keepdim=True) + WEIGHT_EPS)
        corners[s] = corner_rows
    return PointMaps(voxel, inv_count, corners, weights)


def pad_point_maps(pm: PointMaps, n0: int) -> PaddedPointMaps:
    """The exported graph's form of ``pm`` (level 0 must be among its levels)."""
    rows0 = pm.voxel[0]
    order = torch.argsort(rows0, stable=True)
    counts = torch.bincount(rows0, minlength=n0)
    bounds = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    members, _ = _pad_segments(order, bounds, pm.num_points)
    return PaddedPointMaps(members, dict(pm.inv_count), dict(pm.corners), dict(pm.weights))


def devoxelize(x: Tensor, pm: PointMaps | PaddedPointMaps, level: int) -> Tensor:
    """Voxel features [N_s, C] of level ``level`` -> trilinearly interpolated point features [P, C] (fp32)."""
    xp = torch.cat([x.float(), x.new_zeros((1, x.shape[1]), dtype=torch.float32)], 0)
    idx, w = pm.corners[level], pm.weights[level]
    out = xp.index_select(0, idx[:, 0]) * w[:, 0:1]
    for k in range(1, 8):
        out = out + xp.index_select(0, idx[:, k]) * w[:, k : k + 1]
    return out


def voxelize_mean(
    z: Tensor, pm: PointMaps | PaddedPointMaps, level: int, maps: KernelMaps | PaddedMaps | None = None
) -> Tensor:
    """Point features [P, C] -> the mean over each voxel of level ``level`` [N_s, C].

    The padded (exported) form needs ``maps`` (padded k2s2 maps) for levels above 0.
    """
    if isinstance(pm, PointMaps):
        n = pm.inv_count[level].shape[0]
        if is_tracing():
            raise ValueError("exported graphs take padded point maps (pad_point_maps)")
        total = z.new_zeros((n, z.shape[1])).index_add(0, pm.voxel[level], z)
        return total * pm.inv_count[level].to(z.dtype)
    zp = torch.cat([z, z.new_zeros((1, z.shape[1]))], 0)
    total = zp[pm.members].sum(1)  # [N_0, C]
    for s in range(level):
        d = maps.down[s]
        grouped = torch.cat([total, total.new_zeros((1, total.shape[1]))], 0)[d.fine].reshape(-1, total.shape[1])
        total = gather_sum(torch.cat([grouped, grouped.new_zeros((1, grouped.shape[1]))], 0), d.child)
    return total * pm.inv_count[level].to(z.dtype)


__all__ = ["PaddedPointMaps", "PointMaps", "build_point_maps", "devoxelize", "pad_point_maps", "voxelize_mean"]
