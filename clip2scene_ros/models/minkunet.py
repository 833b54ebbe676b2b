"""MinkUNet on the gather + matmul sparse engine, with named embedding heads.

Layout (SpVNAS/MinkUNet): a stem of submanifold convolutions, four encoder stages (k2s2 down-conv
+ residual blocks), four decoder stages (transposed k2s2 up-conv to the encoder's coordinates,
concatenation with the skip, residual blocks), then one linear head per name on voxel features.
``layers`` gives the residual blocks per stage (MinkUNet18: 2 everywhere; MinkUNet34:
2,3,4,6 in the encoder), ``width`` scales every channel count.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from clip2scene_ros.sparse import KernelMaps, PaddedMaps, build_kernel_maps
from clip2scene_ros.sparse.native import TableMaps, pair_conv
from clip2scene_ros.sparse.ops import AnyMaps, DownConv3d, SubmConv3d, UpConv3d

ARCHS = ("minkunet", "spvcnn")  # spvcnn: the same U-Net plus a point branch (models/spvcnn.py)
FEATURE_COLUMNS = {"x": 0, "y": 1, "z": 2, "intensity": 3}
# computed from the voxels, not read from a cloud column (models/ground.py)
DERIVED_FEATURES = ("height_above_ground",)


def feature_column(name: str) -> int:
    """Column of a named input feature in a point array [P, 3+F] (``feat<i>`` = column 3+i)."""
    if name in FEATURE_COLUMNS:
        return FEATURE_COLUMNS[name]
    if name.startswith("feat") and name[4:].isdigit():
        return 3 + int(name[4:])
    if name in DERIVED_FEATURES:
        raise ValueError(f"{name!r} is computed from the voxels, it has no cloud column")
    raise ValueError(
        f"unknown input feature {name!r}; use x, y, z, intensity, feat<i> (column 3+i) or one of {DERIVED_FEATURES}"
    )


@dataclass
class ModelConfig:
    """Architecture of a :class:`MinkUNet` or an SPVCNN (``arch``; stored as JSON next to checkpoints)."""

    name: str = "minkunet18"
    arch: str = "minkunet"
    layers: list[int] = field(default_factory=lambda: [2, 2, 2, 2, 2, 2, 2, 2])
    stem_channels: int = 32
    stem_convs: int = 2
    stem_kernel: int = 3
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 96, 96])
    width: float = 1.0
    in_features: list[str] = field(default_factory=lambda: ["intensity"])
    heads: list[str] = field(default_factory=lambda: ["global", "local"])
    embed_dim: int = 512
    voxel_size: float = 0.1
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; use one of {ARCHS}")
        if len(self.layers) != 8:
            raise ValueError(f"layers needs 8 entries (4 encoder + 4 decoder stages), got {self.layers}")
        if len(self.encoder_channels) != 4 or len(self.decoder_channels) != 4:
            raise ValueError("encoder_channels and decoder_channels need 4 entries each")
        if self.width <= 0 or self.embed_dim <= 0 or self.voxel_size <= 0:
            raise ValueError("width, embed_dim and voxel_size must be positive")
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads must be a non-empty list of unique names, got {self.heads}")
        if self.stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd, got {self.stem_kernel}")
        for f in self.in_features:
            if f not in DERIVED_FEATURES:
                feature_column(f)
        self.layers = [int(v) for v in self.layers]
        self.heads = list(self.heads)
        self.in_features = list(self.in_features)

    def scaled(self, c: int) -> int:
        return max(1, round(c * self.width))

    @property
    def kernel_sizes(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys([3, self.stem_kernel]))

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def bn_affine(bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """An eval-mode BatchNorm as ``x * scale + shift``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class ConvBN(nn.Module):
    """Sparse or pointwise convolution + BatchNorm (+ ReLU); BN folds into the conv for inference."""

    def __init__(self, conv: nn.Module, channels: int, momentum: float) -> None:
        super().__init__()
        self.conv = conv
        self.bn: nn.Module = nn.BatchNorm1d(channels, momentum=momentum)

    def forward(
        self,
        x: Tensor,
        maps: AnyMaps,
        level: int,
        relu: bool,
        acc_out: bool = False,
        residual: Tensor | None = None,
    ) -> Tensor:
        if residual is not None:  # folded fp32 inference on table maps: one fused kernel
            return self.conv(x, maps, level, relu=relu, residual=residual)
        if self.conv.weight.dtype != torch.float32:
            # reduced-precision inference: the convolution's input is rounded here to the weights'
            # dtype; the residual stream between blocks stays fp32
            x = x.to(self.conv.weight.dtype)
        if isinstance(self.bn, nn.Identity):
            if acc_out:
                return self.conv(x, maps, level, relu=relu, acc_out=True)
            return self.conv(x, maps, level, relu=relu)
        y = self.bn(self.conv(x, maps, level))
        return torch.relu(y) if relu else y

    @torch.no_grad()
    def fold(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        scale, bias = bn_affine(self.bn)
        if self.conv.bias is not None:
            bias = bias + self.conv.bias * scale
        self.conv.weight.mul_(scale.to(self.conv.weight.dtype))
        self.conv.bias = nn.Parameter(bias.to(self.conv.weight.dtype))
        self.bn = nn.Identity()


class Pointwise(nn.Module):
    """1x1x1 convolution (residual shortcut); weight ``[1, C_in, C_out]`` like the sparse convs."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, in_channels, out_channels))
        self.bias: nn.Parameter | None = None
        nn.init.uniform_(self.weight, -((3.0 / in_channels) ** 0.5), (3.0 / in_channels) ** 0.5)

    def forward(self, x: Tensor, maps: AnyMaps, level: int, relu: bool = False) -> Tensor:
        if isinstance(maps, TableMaps):  # fused kernels: matmul and bias in one call
            ident = maps.identity(level)
            return pair_conv(x, self.weight, ident, self.bias, relu, transpose=(ident, False))
        y = x @ self.weight[0].to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return torch.relu(y) if relu else y


class BasicBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN + shortcut (1x1 conv + BN when channels change), then ReLU."""

    def __init__(self, cin: int, cout: int, momentum: float) -> None:
        super().__init__()
        self.conv1 = ConvBN(SubmConv3d(cin, cout, 3), cout, momentum)
        self.conv2 = ConvBN(SubmConv3d(cout, cout, 3), cout, momentum)
        self.shortcut = ConvBN(Pointwise(cin, cout), cout, momentum) if cin != cout else None

    def forward(self, x: Tensor, maps: AnyMaps, level: int) -> Tensor:
        if isinstance(maps, TableMaps) and isinstance(self.conv2.bn, nn.Identity):
            # fused kernels: the shortcut add and the ReLU happen inside the second convolution
            s = x if self.shortcut is None else self.shortcut(x, maps, level, False)
            return self.conv2(self.conv1(x, maps, level, True), maps, level, True, residual=s)
        # reduced precision: the block's output (the residual stream) is the fp32 accumulator;
        # only the convolutions' inputs are rounded to bf16/fp16
        y = self.conv2(self.conv1(x, maps, level, True), maps, level, False, acc_out=True)
        s = (x if self.shortcut is None else self.shortcut(x, maps, level, False)).to(y.dtype)
        if not y.requires_grad and not torch.jit.is_tracing():
            return y.add_(s).relu_()
        return torch.relu(y + s)


class MinkUNet(nn.Module):
    """Sparse residual U-Net; see the module docstring. Build with :func:`create_model`."""

    num_levels = 5

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        m = config.bn_momentum
        cin = len(config.in_features)
        stem = config.scaled(config.stem_channels)
        enc = [config.scaled(c) for c in config.encoder_channels]
        dec = [config.scaled(c) for c in config.decoder_channels]
        self.stem = nn.ModuleList()
        for i in range(config.stem_convs):
            self.stem.append(ConvBN(SubmConv3d(cin if i == 0 else stem, stem, config.stem_kernel), stem, m))
        self.down = nn.ModuleList()
        self.enc_blocks = nn.ModuleList()
        prev = stem
        for i, c in enumerate(enc):
            # SpVNAS layout: the k2s2 conv keeps the width, the first block changes it.
            self.down.append(ConvBN(DownConv3d(prev, prev), prev, m))
            blocks = [BasicBlock(prev if j == 0 else c, c, m) for j in range(config.layers[i])]
            self.enc_blocks.append(nn.ModuleList(blocks))
            prev = c
        skips = [stem, *enc[:-1]]  # channels at levels 0..3
        self.up = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        for i, c in enumerate(dec):
            self.up.append(ConvBN(UpConv3d(prev, c), c, m))
            skip = skips[3 - i]
            blocks = [BasicBlock(c + skip if j == 0 else c, c, m) for j in range(config.layers[4 + i])]
            self.dec_blocks.append(nn.ModuleList(blocks))
            prev = c
        self.out_channels = prev
        self.heads = nn.ModuleDict({name: nn.Linear(prev, config.embed_dim) for name in config.heads})
        self.bn_folded = False

    # -- core -----------------------------------------------------------------------------------
    def forward(self, feats: Tensor, maps: AnyMaps, heads: list[str] | None = None) -> dict[str, Tensor]:
        """Voxel features [N_0, C_in] in level-0 row order -> ``{head: [N_0, embed_dim]}`` (all
        heads, or only ``heads``)."""
        return self.run_heads(self.trunk(feats, maps), heads)

    def trunk(self, feats: Tensor, maps: AnyMaps) -> Tensor:
        """Everything before the heads: the last decoder stage's voxel features [N_0, C_last]."""
        self.check_input(feats, maps)
        x = self.run_stem(feats, maps)
        skips = [x]
        x = self.run_encoder(x, maps, skips)
        for i in range(4):
            x = self.run_decoder_stage(i, x, skips, maps)
        return x

    def check_input(self, feats: Tensor, maps: AnyMaps) -> None:
        if feats.ndim != 2 or feats.shape[1] != len(self.config.in_features):
            raise ValueError(
                f"expected voxel features [N, {len(self.config.in_features)}] "
                f"({', '.join(self.config.in_features)}), got {tuple(feats.shape)}"
            )
        n0 = getattr(maps.subm_map(0), "num_voxels", -1)
        if n0 >= 0 and feats.shape[0] != n0:
            raise ValueError(
                f"{feats.shape[0]} feature rows but the kernel maps hold {n0} voxels; "
                "build the maps from the same voxel coordinates"
            )

    def run_stem(self, x: Tensor, maps: AnyMaps) -> Tensor:
        for conv in self.stem:
            x = conv(x, maps, 0, True)
        return x

    def run_encoder(self, x: Tensor, maps: AnyMaps, skips: list[Tensor]) -> Tensor:
        """Levels 1..4; appends each level's output to ``skips``."""
        for i, (down, blocks) in enumerate(zip(self.down, self.enc_blocks)):
            x = down(x, maps, i, True)
            for b in blocks:
                x = b(x, maps, i + 1)
            skips.append(x)
        return x

    def run_decoder_stage(self, i: int, x: Tensor, skips: list[Tensor], maps: AnyMaps) -> Tensor:
        """Decoder stage ``i`` (0..3): up to level ``3 - i``, concatenate its skip, residual blocks."""
        level = 3 - i
        x = self.up[i](x, maps, level, True)
        skip = skips[level]
        x = torch.cat([x.to(skip.dtype), skip], 1)
        for b in self.dec_blocks[i]:
            x = b(x, maps, level)
        return x

    def run_heads(self, x: Tensor, heads: list[str] | None = None) -> dict[str, Tensor]:
        chosen = self.heads.items() if heads is None else [(h, self.heads[h]) for h in heads]
        if next(iter(self.heads.values())).weight.dtype != torch.float32:
            # heads in fp32: cheap, and keeps reduced-precision labels stable
            x = x.float()
            return {name: nn.functional.linear(x, h.weight.float(), h.bias.float()) for name, h in chosen}
        return {name: head(x) for name, head in chosen}

    @staticmethod
    def build_maps_for(config: ModelConfig, coords: Tensor) -> KernelMaps:
        """Kernel maps for an architecture (5 levels, the kernel sizes it uses)."""
        return build_kernel_maps(coords, MinkUNet.num_levels, config.kernel_sizes, primary_kernel=3)

    def build_maps(self, coords: Tensor) -> KernelMaps:
        return self.build_maps_for(self.config, coords)

    def maps_from_flat(self, tensors: list[Tensor]) -> PaddedMaps:
        """The maps an exported graph reads, from its flat inputs (after ``feats``)."""
        return PaddedMaps.from_flat(tensors, self.num_levels)


    @torch.no_grad()
    def fold_bn(self) -> MinkUNet:
        """Fold every BatchNorm into its convolution (inference only; switches to eval mode)."""
        self.eval()
        for mod in self.modules():
            if isinstance(mod, ConvBN):
                mod.fold()
        self.bn_folded = True
        return self


class ExportModule(nn.Module):
    """Flat-tensor wrapper for ONNX export: ``(feats, *padded_map_tensors) -> head outputs``
    (see :func:`clip2scene_ros.sparse.padded_tensors`)."""

    def __init__(self, model: MinkUNet) -> None:
        super().__init__()
        self.model = model
        self.head_names = list(model.config.heads)

    def forward(self, feats: Tensor, *map_tensors: Tensor) -> tuple[Tensor, ...]:
        out = self.model(feats, self.model.maps_from_flat(list(map_tensors)))
        return tuple(out[h] for h in self.head_names)
