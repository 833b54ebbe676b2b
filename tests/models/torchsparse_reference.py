"""MinkUNet and SPVCNN built with torchsparse 1.x, the way the SpVNAS/CLIP2Scene code builds them.

Written from the SPVNAS paper (Tang et al., ECCV 2020) and torchsparse's 1.x API: the same
state-dict layout as those checkpoints (``stem``, ``stage1..4``, ``up1..4``, ``point_transforms``,
``classifier``), so their weights go through ``clip2scene_ros.models.import_torchsparse``. A test
oracle only: it imports torchsparse, which the engine never does.

torchsparse 1.x coordinates are int32 ``(x, y, z, batch)``. Its k2s2 down-sampling truncates
towards zero, so SpVNAS-style pipelines shift coordinates to be non-negative; a shift by a multiple
of 16 voxels keeps the coarse grouping of our engine (which floors), and :func:`shift_for` picks one.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

warnings.filterwarnings("ignore", category=FutureWarning, module="torchsparse")
import torchsparse  # noqa: E402
import torchsparse.nn as spnn  # noqa: E402
import torchsparse.nn.functional as F  # noqa: E402
from torchsparse import PointTensor, SparseTensor  # noqa: E402
from torchsparse.nn.utils import get_kernel_offsets  # noqa: E402

from clip2scene_ros.models import ModelConfig  # noqa: E402


def shift_for(coords: Tensor, levels: int = 5) -> Tensor:
    """A per-axis shift (multiple of 2**(levels-1)) that makes ``coords`` [N, 3] non-negative."""
    step = 1 << (levels - 1)
    lo = coords.min(0).values.clamp(max=0)
    return (-lo + step - 1) // step * step


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, transposed: bool = False) -> nn.Sequential:
    return nn.Sequential(
        spnn.Conv3d(cin, cout, k, stride=stride, transposed=transposed), spnn.BatchNorm(cout), spnn.ReLU(True)
    )


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.net = _conv_bn(cin, cout, 2, 2)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.net(x)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.net = _conv_bn(cin, cout, 2, 2, transposed=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.net(x)


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spnn.Conv3d(cin, cout, 3), spnn.BatchNorm(cout), spnn.ReLU(True), spnn.Conv3d(cout, cout, 3),
            spnn.BatchNorm(cout),
        )  # fmt: skip
        self.downsample = (
            nn.Sequential() if cin == cout else nn.Sequential(spnn.Conv3d(cin, cout, 1), spnn.BatchNorm(cout))
        )
        self.relu = spnn.ReLU(True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.relu(self.net(x) + self.downsample(x))


def _widths(cfg: ModelConfig) -> list[int]:
    return [cfg.scaled(c) for c in [cfg.stem_channels, *cfg.encoder_channels, *cfg.decoder_channels]]


class TorchsparseUNet(nn.Module):
    """The sparse U-Net both networks share; ``cs`` = stem, 4 encoder, 4 decoder widths."""

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        cs, cin = _widths(cfg), len(cfg.in_features)
        self.stem = nn.Sequential(
            spnn.Conv3d(cin, cs[0], 3), spnn.BatchNorm(cs[0]), spnn.ReLU(True),
            spnn.Conv3d(cs[0], cs[0], 3), spnn.BatchNorm(cs[0]), spnn.ReLU(True),
        )  # fmt: skip
        for i in range(4):
            c_in, c = cs[i], cs[i + 1]
            blocks = [_Residual(c_in if j == 0 else c, c) for j in range(cfg.layers[i])]
            setattr(self, f"stage{i + 1}", nn.Sequential(_Down(c_in, c_in), *blocks))
        for i in range(4):
            c_in, c, skip = cs[4 + i], cs[5 + i], cs[3 - i]
            blocks = [_Residual(c + skip if j == 0 else c, c) for j in range(cfg.layers[4 + i])]
            setattr(self, f"up{i + 1}", nn.ModuleList([_Up(c_in, c), nn.Sequential(*blocks)]))
        self.classifier = nn.Sequential(nn.Linear(cs[8], num_classes))

    def _up(self, i: int, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        up = getattr(self, f"up{i}")
        return up[1](torchsparse.cat([up[0](x), skip]))


class TorchsparseMinkUNet(TorchsparseUNet):
    def forward(self, x: SparseTensor) -> Tensor:
        x.cmaps.setdefault(x.stride, x.coords)
        x0 = self.stem(x)
        x1 = self.stage1(x0)
        x2 = self.stage2(x1)
        x3 = self.stage3(x2)
        x4 = self.stage4(x3)
        y = self._up(1, x4, x3)
        y = self._up(2, y, x2)
        y = self._up(3, y, x1)
        y = self._up(4, y, x0)
        return self.classifier(y.F)


# -- point <-> voxel (SPVCNN): hashes of (x, y, z, batch) looked up with torchsparse's functions --
def _floor_coords(z: PointTensor, stride: int) -> Tensor:
    xyz = torch.floor(z.C[:, :3] / stride).int() * stride
    return torch.cat([xyz, z.C[:, 3:].int()], 1)


def initial_voxelize(z: PointTensor) -> SparseTensor:
    """Voxels of stride 1 holding the mean of their points' features."""
    point_hash = F.sphash(_floor_coords(z, 1))
    voxel_hash = torch.unique(point_hash)
    idx = F.sphashquery(point_hash, voxel_hash)
    counts = F.spcount(idx.int(), len(voxel_hash))
    coords = torch.round(F.spvoxelize(_floor_coords(z, 1).float(), idx, counts)).int()
    x = SparseTensor(F.spvoxelize(z.F, idx, counts), coords, 1)
    x.cmaps.setdefault(x.stride, x.coords)
    z.additional_features = {"idx_query": {x.s: idx}, "counts": {x.s: counts}}
    return x


def point_to_voxel(x: SparseTensor, z: PointTensor) -> SparseTensor:
    """Average the point features into the voxels of ``x`` (same coordinates and maps)."""
    cache = z.additional_features
    if x.s not in cache["idx_query"]:
        idx = F.sphashquery(F.sphash(_floor_coords(z, x.s[0])), F.sphash(x.C))
        cache["idx_query"][x.s] = idx
        cache["counts"][x.s] = F.spcount(idx.int(), x.C.shape[0])
    out = SparseTensor(F.spvoxelize(z.F, cache["idx_query"][x.s], cache["counts"][x.s]), x.C, x.s)
    out.cmaps, out.kmaps = x.cmaps, x.kmaps
    return out


def voxel_to_point(x: SparseTensor, z: PointTensor) -> PointTensor:
    """Trilinear interpolation of the voxel features of ``x`` at the points' positions."""
    if x.s not in z.idx_query:
        corners = get_kernel_offsets(2, x.s, 1, device=z.F.device)
        idx = F.sphashquery(F.sphash(_floor_coords(z, x.s[0]), corners), F.sphash(x.C))
        z.weights[x.s] = F.calc_ti_weights(z.C, idx, scale=x.s[0]).transpose(0, 1).contiguous()
        z.idx_query[x.s] = idx.transpose(0, 1).contiguous()
    out = PointTensor(F.spdevoxelize(x.F, z.idx_query[x.s], z.weights[x.s]), z.C, z.idx_query, z.weights)
    out.additional_features = z.additional_features
    return out


class TorchsparseSPVCNN(TorchsparseUNet):
    """SPVCNN: the U-Net plus a point branch (MLP per point) fused after the stem, the encoder and
    each half of the decoder: devoxelize (trilinear) -> add the point MLP -> voxelize (average)."""

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__(cfg, num_classes)
        cs = _widths(cfg)
        self.point_transforms = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(True))
            for a, b in ((cs[0], cs[4]), (cs[4], cs[6]), (cs[6], cs[8]))
        )

    def forward(self, z: PointTensor) -> Tensor:
        """``z``: point features and float coordinates in voxel units ``(x, y, z, batch)``."""
        x0 = self.stem(initial_voxelize(z))
        z0 = voxel_to_point(x0, z)
        x1 = self.stage1(point_to_voxel(x0, z0))
        x2 = self.stage2(x1)
        x3 = self.stage3(x2)
        x4 = self.stage4(x3)
        z1 = voxel_to_point(x4, z0)
        z1.F = z1.F + self.point_transforms[0](z0.F)
        y = self._up(1, point_to_voxel(x4, z1), x3)
        y = self._up(2, y, x2)
        z2 = voxel_to_point(y, z1)
        z2.F = z2.F + self.point_transforms[1](z1.F)
        y = self._up(3, point_to_voxel(y, z2), x1)
        y = self._up(4, y, x0)
        z3 = voxel_to_point(y, z2)
        z3.F = z3.F + self.point_transforms[2](z2.F)
        return self.classifier(z3.F)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere and random BatchNorm statistics (eval mode), so every layer counts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("kernel"):  # [K, C_in, C_out] or [C_in, C_out]
                fan = p.shape[-2] * (p.shape[0] if p.ndim == 3 else 1)
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * (3.0 / fan) ** 0.5)
            elif p.ndim == 2:  # nn.Linear [out, in]
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * (3.0 / p.shape[1]) ** 0.5)
            elif name.endswith("weight"):  # BatchNorm scale
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.75)
            else:
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 - 0.2)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def run_minkunet(model: TorchsparseMinkUNet, coords: Tensor, feats: Tensor) -> Tensor:
    """``coords`` int [N, 4] as (batch, x, y, z) (our layout), ``feats`` [N, C] -> [N, classes] in the same rows."""
    c = coords.long()
    xyz = c[:, 1:] + shift_for(c[:, 1:])
    st = SparseTensor(feats.float(), torch.cat([xyz, c[:, :1]], 1).int())
    with torch.no_grad():
        return model(st)


def run_spvcnn(model: TorchsparseSPVCNN, points_vox: Tensor, batch: Tensor, feats: Tensor) -> Tensor:
    """Points in voxel units [P, 3] (xyz / voxel_size), batch [P], features [P, C] -> [P, classes]."""
    shift = shift_for(torch.floor(points_vox).long()).float()
    coords = torch.cat([points_vox + shift, batch[:, None].float()], 1)
    with torch.no_grad():
        return model(PointTensor(feats.float(), coords))
