"""SPVCNN (sparse point-voxel CNN, SPVNAS paper): the MinkUNet plus a point branch.

Point features (one row per valid input point) start as the stem's voxel features interpolated
trilinearly at the points; the branch meets the voxel U-Net three more times: after the encoder,
after the second and after the fourth decoder stage. Each time the voxel features are
interpolated back to the points and added to a per-point MLP (Linear + BN + ReLU) of the previous
point features; the sum is averaged into the voxels of the next stage. The heads run on the final
point features, so outputs are per point. Layer names follow :class:`.minkunet.MinkUNet`, plus
``point_transforms``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from clip2scene_ros.sparse import KernelMaps, PaddedMaps, Voxels
from clip2scene_ros.sparse.pointvoxel import (
    PaddedPointMaps,
    PointMaps,
    build_point_maps,
    devoxelize,
    pad_point_maps,
    voxelize_mean,
)

from .minkunet import MinkUNet, ModelConfig, bn_affine

POINT_LEVELS = (0, 2, 4)  # levels where the point branch meets the voxels
# extra inputs of an exported SPVCNN (after the kernel-map inputs), see pointvoxel.PaddedPointMaps
POINT_INPUTS = ("point_members", *(f"point{s}_{n}" for s in POINT_LEVELS for n in ("inv_count", "corners", "weights")))


def point_tensors(maps: PointVoxelMaps) -> list[Tensor]:
    """The :data:`POINT_INPUTS` of an exported graph, from eager maps."""
    p = pad_point_maps(maps.points, maps.kernel.coords[0].shape[0])
    return [p.members, *(t for s in POINT_LEVELS for t in (p.inv_count[s], p.corners[s], p.weights[s]))]


def point_dynamic_axes() -> dict[str, dict[int, str]]:
    """Points ``np``, points per level-0 voxel ``jp``, voxels ``n<s>``."""
    axes = {"point_members": {0: "n0", 1: "jp"}}
    for s in POINT_LEVELS:
        axes[f"point{s}_inv_count"] = {0: f"n{s}"}
        axes[f"point{s}_corners"] = {0: "np"}
        axes[f"point{s}_weights"] = {0: "np"}
    return axes


@dataclass(eq=False)
class PointVoxelMaps:
    """Kernel maps plus point tables: what :class:`SPVCNN` reads (eager or padded)."""

    kernel: KernelMaps | PaddedMaps
    points: PointMaps | PaddedPointMaps

    def to(self, device: torch.device | str) -> PointVoxelMaps:
        return PointVoxelMaps(self.kernel.to(device), self.points.to(device))

    def __getattr__(self, name: str):  # noqa: ANN204 - KernelMaps' fields (input_order, coords, ...)
        if name in ("kernel", "points"):
            raise AttributeError(name)
        return getattr(self.kernel, name)


class LinearBN(nn.Module):
    """Point MLP layer: Linear + BatchNorm + ReLU; the BN folds into the Linear for inference."""

    def __init__(self, cin: int, cout: int, momentum: float) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, cout)
        self.bn: nn.Module = nn.BatchNorm1d(cout, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        w = self.linear.weight
        return torch.relu(self.bn(nn.functional.linear(x.to(w.dtype), w, self.linear.bias)).float())

    @torch.no_grad()
    def fold(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        scale, shift = bn_affine(self.bn)
        self.linear.bias.copy_(self.linear.bias * scale + shift)
        self.linear.weight.mul_(scale[:, None])
        self.bn = nn.Identity()


class SPVCNN(MinkUNet):
    """See the module docstring. Build with ``create_model("spvcnn")`` (config ``arch: spvcnn``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        m = config.bn_momentum
        stem = config.scaled(config.stem_channels)
        enc = [config.scaled(c) for c in config.encoder_channels]
        dec = [config.scaled(c) for c in config.decoder_channels]
        self.point_transforms = nn.ModuleList(
            [LinearBN(stem, enc[3], m), LinearBN(enc[3], dec[1], m), LinearBN(dec[1], dec[3], m)]
        )

    def forward(self, feats: Tensor, maps: PointVoxelMaps) -> dict[str, Tensor]:
        """Voxel features [N_0, C_in] (level-0 order) -> ``{head: [P, embed_dim]}`` per point."""
        if not isinstance(maps, PointVoxelMaps):
            raise TypeError("SPVCNN needs point tables too: build its inputs with models.inputs.prepare_inputs()")
        km, pm = maps.kernel, maps.points
        self.check_input(feats, km)
        x0 = self.run_stem(feats, km)
        z0 = devoxelize(x0, pm, 0)
        skips = [x0]
        x = self.run_encoder(voxelize_mean(z0, pm, 0, km), km, skips)
        z1 = devoxelize(x, pm, 4) + self.point_transforms[0](z0)
        x = voxelize_mean(z1, pm, 4, km).to(x.dtype)
        x = self.run_decoder_stage(1, self.run_decoder_stage(0, x, skips, km), skips, km)
        z2 = devoxelize(x, pm, 2) + self.point_transforms[1](z1)
        x = voxelize_mean(z2, pm, 2, km).to(x.dtype)
        x = self.run_decoder_stage(3, self.run_decoder_stage(2, x, skips, km), skips, km)
        z3 = devoxelize(x, pm, 0) + self.point_transforms[2](z2)
        return self.run_heads(z3)

    def maps_from_flat(self, tensors: list[Tensor]) -> PointVoxelMaps:
        n = len(tensors) - len(POINT_INPUTS)
        it = iter(tensors[n:])
        members = next(it)
        per_level = {s: (next(it), next(it), next(it)) for s in POINT_LEVELS}
        pm = PaddedPointMaps(members, *({s: v[i] for s, v in per_level.items()} for i in range(3)))
        return PointVoxelMaps(super().maps_from_flat(tensors[:n]), pm)

    def prepare(self, points: Tensor, vox: Voxels, voxel_size: float) -> tuple[Tensor, PointVoxelMaps, Tensor]:
        """Inputs of a forward from voxelized ``points`` [P, 3+F]: voxel features, maps, and each
        point's output row (-1 for points dropped as NaN/Inf)."""
        return prepare_spvcnn(self.config, points, vox, voxel_size)

    @torch.no_grad()
    def fold_bn(self) -> SPVCNN:
        super().fold_bn()
        for t in self.point_transforms:
            t.fold()
        return self


def prepare_spvcnn(
    config: ModelConfig, points: Tensor, vox: Voxels, voxel_size: float
) -> tuple[Tensor, PointVoxelMaps, Tensor]:
    """See :meth:`SPVCNN.prepare` (a function: runtimes prepare inputs from the config alone)."""
    from .inputs import voxel_features

    maps = MinkUNet.build_maps_for(config, vox.coords)
    feats = voxel_features(config, vox).index_select(0, maps.input_order)
    p2v = vox.point_to_voxel
    valid = (p2v >= 0).nonzero().squeeze(1)
    pts = points.index_select(0, valid)
    # the same division as voxelize(), so floor(position) is each point's voxel
    vs = torch.full((3,), float(voxel_size), dtype=pts.dtype, device=pts.device)
    batch = vox.coords[p2v.index_select(0, valid), 0]
    pm = build_point_maps(
        pts[:, :3].detach() / vs, batch, maps, maps.input_rank.index_select(0, p2v.index_select(0, valid)), POINT_LEVELS
    )
    rows = torch.full_like(p2v, -1)
    rows[valid] = torch.arange(len(valid), device=rows.device)
    return feats, PointVoxelMaps(maps, pm), rows


__all__ = [
    "POINT_INPUTS",
    "SPVCNN",
    "LinearBN",
    "PointVoxelMaps",
    "point_dynamic_axes",
    "point_tensors",
    "prepare_spvcnn",
]
