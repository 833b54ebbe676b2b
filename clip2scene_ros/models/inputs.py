"""The input contract: how a model reads a point cloud, and how its outputs come back per point.

One path for every caller (training, offline evaluation, replay, the node through the Segmenter):

1. :meth:`InputSpec.points_from_cloud`: a structured cloud (PointCloud2 fields, a bag's cloud, a
   dataset's record) -> float32 ``[P, 3 + F]`` (x, y, z, then the model's fields), intensity scaled
   into the model's 0..1;
2. :meth:`InputSpec.to_model_frame`: the sensor's frame -> the frame the model was trained in
   (:class:`~clip2scene_ros.geometry.frames.ModelFrame`);
3. :func:`prepare_inputs`: voxelize, build the kernel maps, reorder voxel features into the maps'
   level-0 row order, and remember each point's voxel row;
4. :meth:`PreparedInputs.to_points` / :func:`encode_points`: per-voxel outputs -> per-point rows in
   the input's order (zeros, or label 0, for points the voxelizer dropped).

Checkpoints record the spec in ``model.json`` (``input``); checkpoints written before it get the
values every model then used (the model config's fields and voxel size, intensity 0..255 scaled by
1/255, the simulator's LIDAR_TOP frame).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clip2scene_ros.geometry.frames import ModelFrame
from clip2scene_ros.sparse import (
    KernelMaps,
    Voxels,
    native,
    padded_input_names,
    padded_tensors,
    padded_tensors_from_tables,
    unpack_keys,
    voxelize,
)
from clip2scene_ros.sparse.native import TableMaps, build_table_maps, table_maps_from_keys, voxelize_keys

from .ground import HEIGHT_ABOVE_GROUND, height_above_ground
from .minkunet import DERIVED_FEATURES, MinkUNet, ModelConfig, feature_column
from .spvcnn import POINT_INPUTS, PointVoxelMaps, point_tensors, prepare_spvcnn

INPUT_FORMAT = "clip2scene_ros.input/1"
# Sensor intensity 0..255 (nuScenes, Velodyne/Ouster drivers, the simulator) -> the models' 0..1
DEFAULT_INTENSITY_SCALE = 1.0 / 255.0
XYZ = ("x", "y", "z")


def default_fields(config: ModelConfig) -> tuple[str, ...]:
    """Cloud fields a model reads after x, y, z: its input features other than coordinates and
    those derived from the voxels."""
    return tuple(f for f in config.in_features if f not in XYZ and f not in DERIVED_FEATURES)


def cloud_columns(config: ModelConfig) -> list[int]:
    """Point-array columns the model's cloud-read features come from."""
    return [feature_column(f) for f in config.in_features if f not in DERIVED_FEATURES]


def voxel_features(config: ModelConfig, vox: Voxels) -> Tensor:
    """The model's input features [N, C] of the voxels (in ``vox``'s row order)."""
    cols = []
    for name in config.in_features:
        if name == HEIGHT_ABOVE_GROUND:
            cols.append(height_above_ground(vox.feats[:, :3], vox.coords[:, 0], vox.counts))
        else:
            cols.append(vox.feats[:, feature_column(name)])
    return torch.stack(cols, 1)


@dataclass(frozen=True)
class InputSpec:
    """What a model needs to read a cloud (stored as ``input`` in the checkpoint's ``model.json``)."""

    fields: tuple[str, ...] = ("intensity",)  # cloud fields after x, y, z, in the points' column order
    intensity_scale: float = DEFAULT_INTENSITY_SCALE  # multiplies the cloud's intensity field
    voxel_size: float = 0.1  # metres
    frame: ModelFrame = field(default_factory=ModelFrame.lidar_top)

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        if not (np.isfinite(self.intensity_scale) and self.intensity_scale > 0):
            raise ValueError(f"intensity_scale must be a positive number, got {self.intensity_scale}")
        if any(f in XYZ or not f for f in self.fields) or len(set(self.fields)) != len(self.fields):
            raise ValueError(f"fields are the cloud fields after x, y, z, each once; got {list(self.fields)}")
        object.__setattr__(self, "fields", tuple(self.fields))

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def for_model(cls, config: ModelConfig, **overrides) -> InputSpec:
        """The spec of a model config: its fields and voxel size, plus ``overrides``."""
        spec = cls(fields=default_fields(config), voxel_size=config.voxel_size)
        return spec.replace(**overrides) if overrides else spec

    @classmethod
    def from_metadata(cls, meta: dict) -> InputSpec:
        """From a parsed ``model.json`` (``input``; older files: defaults from ``config``/``extra``)."""
        config = ModelConfig.from_dict(meta["config"])
        d = meta.get("input") or {}
        if d and d.get("format") != INPUT_FORMAT:
            raise ValueError(f"unsupported input format {d.get('format')!r}, expected {INPUT_FORMAT}")
        frame = d.get("frame") or (meta.get("extra") or {}).get("frame")
        spec = cls(
            fields=tuple(d.get("fields", default_fields(config))),
            intensity_scale=float(d.get("intensity_scale", DEFAULT_INTENSITY_SCALE)),
            voxel_size=float(d.get("voxel_size", config.voxel_size)),
            frame=ModelFrame.from_dict(frame),
        )
        spec.check(config)
        return spec

    @classmethod
    def from_checkpoint(cls, directory: str | Path) -> InputSpec:
        from .registry import CONFIG_FILE

        path = Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: not a model checkpoint")
        return cls.from_metadata(json.loads(path.read_text()))

    def replace(self, **changes) -> InputSpec:
        if "fields" in changes:
            changes["fields"] = tuple(changes["fields"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {
            "format": INPUT_FORMAT,
            "fields": list(self.fields),
            "intensity_scale": self.intensity_scale,
            "voxel_size": self.voxel_size,
            "frame": self.frame.to_dict(),
        }

    def check(self, config: ModelConfig) -> None:
        """The model's named features must sit in the columns these fields give them."""
        columns = (*XYZ, *self.fields)
        for name in config.in_features:
            if name in DERIVED_FEATURES:
                continue
            col = feature_column(name)
            if not name.startswith("feat") and (col >= len(columns) or columns[col] != name):
                raise ValueError(
                    f"the model reads '{name}' from column {col} but the cloud fields x, y, z, "
                    f"{', '.join(self.fields) or '(none)'} put '{columns[col] if col < len(columns) else 'nothing'}' "
                    "there; list the fields in the model's column order"
                )
            if col >= len(columns):
                raise ValueError(f"the model reads column {col} ({name}) but only {len(columns)} fields are given")

    # -- clouds -> points ----------------------------------------------------------------------

    def points_from_cloud(self, cloud: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """A structured cloud -> (float32 [P, 3 + F] in the model's units, missing field names).

        A missing feature field becomes zeros and is returned so the caller can warn (once);
        missing x, y or z is an error. Multi-count fields use their first element.
        """
        names = cloud.dtype.names or ()
        lacking = [c for c in XYZ if c not in names]
        if lacking:
            raise ValueError(
                f"cloud has no {'/'.join(lacking)} field(s) (fields: {', '.join(names) or 'none'}); "
                "a point cloud with float x, y, z fields is required"
            )
        out = np.empty((cloud.shape[0], 3 + len(self.fields)), dtype=np.float32)
        missing = []
        for i, name in enumerate((*XYZ, *self.fields)):
            if name in names:
                col = cloud[name]
                out[:, i] = col if col.ndim == 1 else col[:, 0]
            else:
                out[:, i] = 0.0
                missing.append(name)
        if "intensity" in self.fields and self.intensity_scale != 1.0:
            out[:, 3 + self.fields.index("intensity")] *= self.intensity_scale
        return out, missing

    def to_model_frame(self, points: np.ndarray, base_from_sensor=None) -> np.ndarray:
        """Points in a sensor frame -> the model's frame (same order). ``None``: already there."""
        return points if base_from_sensor is None else self.frame.to_model(points, base_from_sensor)


# ---- points -> model inputs -> points ----------------------------------------------------------


def graph_input_names(num_levels: int = MinkUNet.num_levels, arch: str = "minkunet") -> list[str]:
    """Names of the exported graph's inputs, in order (see :meth:`PreparedInputs.feeds`)."""
    return ["feats", *padded_input_names(num_levels), *(POINT_INPUTS if arch == "spvcnn" else ())]


@dataclass(eq=False)
class PaddedFeeds:
    """The exported graph's map inputs, padded ahead (:func:`prepare_graph_inputs`)."""

    tensors: list[Tensor]


@dataclass
class PreparedInputs:
    """Clouds voxelized, with kernel maps, and the way back from the model's output rows to points."""

    feats: Tensor | None  # [N_0, C_in] in level-0 row order (None: no valid point)
    maps: KernelMaps | TableMaps | PointVoxelMaps | PaddedFeeds | None
    # int64 [P] output row of every point (clouds concatenated), -1 = dropped: the level-0 voxel
    # row (MinkUNet), or the point's own row among the valid points (SPVCNN, per-point outputs)
    rows: Tensor
    num_voxels: int
    sizes: tuple[int, ...] = ()  # points per cloud

    @property
    def point_rows(self) -> np.ndarray:
        return self.rows.cpu().numpy()

    def feeds(self, dtype: type = np.float32) -> dict[str, np.ndarray]:
        """Named inputs of the exported graph (padded maps, see clip2scene_ros.sparse.padded_tensors)."""
        out = {"feats": self.feats.numpy().astype(dtype)}
        if isinstance(self.maps, PointVoxelMaps):
            names = graph_input_names(arch="spvcnn")[1:]
            tensors = [*padded_tensors(self.maps.kernel), *point_tensors(self.maps)]
        elif isinstance(self.maps, PaddedFeeds):
            names, tensors = graph_input_names()[1:], self.maps.tensors
        else:
            names, tensors = graph_input_names()[1:], padded_tensors(self.maps)
        for name, t in zip(names, tensors, strict=True):
            out[name] = t.numpy()
        return out

    def to_points(self, voxel_outputs: dict[str, np.ndarray], embed_dim: int) -> dict[str, np.ndarray]:
        """Per-voxel numpy outputs -> per-point float32 arrays (zeros for dropped points)."""
        return gather_points(voxel_outputs, self.point_rows, embed_dim)

    def to_point_tensors(self, voxel_outputs: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """Per-voxel tensors -> per-point float tensors, one dict per cloud (differentiable)."""
        valid = self.rows >= 0
        safe = self.rows.clamp(min=0)
        per_point = {}
        for h, f in voxel_outputs.items():
            g = f.float().index_select(0, safe)
            per_point[h] = torch.where(valid[:, None], g, torch.zeros_like(g))
        result, start = [], 0
        for n in self.sizes:
            result.append({h: v[start : start + n] for h, v in per_point.items()})
            start += n
        return result


def _as_points(p: np.ndarray | Tensor, cols: list[int], config: ModelConfig, i: int | None = None) -> Tensor:
    t = p.float() if isinstance(p, Tensor) else torch.as_tensor(np.asarray(p, dtype=np.float32))
    need = max(cols, default=2) + 1
    if t.ndim != 2 or t.shape[1] < need:
        which = "points" if i is None else f"cloud {i}"
        raise ValueError(
            f"{which} must have shape [P, {need}+]: the model reads columns {cols} "
            f"({', '.join(config.in_features)}); got {tuple(t.shape)}"
        )
    return t


def prepare_inputs(
    config: ModelConfig,
    points: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
    voxel_size: float | None = None,
    table_maps: bool = False,
) -> PreparedInputs:
    """Voxelize one cloud ``[P, 3+F]`` (or a batch, a list of clouds) and build the kernel maps.

    Differentiable with respect to the feature columns; tensors keep their device. ``table_maps``:
    neighbour tables for the fused fp32 CPU kernels (:mod:`clip2scene_ros.sparse.native`; MinkUNet
    on CPU only, no export; training runs them too) instead of :class:`KernelMaps`.
    """
    cols = cloud_columns(config)
    if isinstance(points, (list, tuple)):
        if not points:
            raise ValueError("prepare_inputs() needs at least one cloud")
        clouds = [_as_points(p, cols, config, i) for i, p in enumerate(points)]
        batch: Tensor | list[Tensor] = clouds
    else:
        batch = _as_points(points, cols, config)
        clouds = [batch]
    sizes = tuple(len(c) for c in clouds)
    vs = config.voxel_size if voxel_size is None else voxel_size
    if table_maps and config.arch == "minkunet" and isinstance(batch, Tensor) and not batch.requires_grad:
        fast = _prepare_fused(config, batch, vs, sizes)
        if fast is not None:
            return fast
    vox = voxelize(batch, vs)
    if len(vox) == 0:
        rows = torch.full((sum(sizes),), -1, dtype=torch.long, device=clouds[0].device)
        return PreparedInputs(None, None, rows, 0, sizes)
    if config.arch == "spvcnn":  # per-point outputs: the rows are the valid points
        pts = batch if isinstance(batch, Tensor) else torch.cat(clouds)
        feats, pv_maps, rows = prepare_spvcnn(config, pts, vox, vs)
        return PreparedInputs(feats.contiguous(), pv_maps, rows, len(vox), sizes)
    if table_maps:  # rows stay in voxelize's (key-sorted) order
        maps = build_table_maps(vox.coords, MinkUNet.num_levels, config.kernel_sizes)
        return PreparedInputs(voxel_features(config, vox).contiguous(), maps, vox.point_to_voxel, len(vox), sizes)
    maps = MinkUNet.build_maps_for(config, vox.coords)
    feats = voxel_features(config, vox).index_select(0, maps.input_order).contiguous()
    p2v = vox.point_to_voxel
    rows = torch.where(p2v >= 0, maps.input_rank[p2v.clamp(min=0)], torch.full_like(p2v, -1))
    return PreparedInputs(feats, maps, rows, len(vox), sizes)


def prepare_graph_inputs(config: ModelConfig, points: np.ndarray | Tensor) -> PreparedInputs:
    """:func:`prepare_inputs` for the exported graph (ONNX Runtime, TensorRT), one cloud.

    A MinkUNet's padded maps come from the fused kernels' neighbour tables where those are built
    (~10x faster than padding :class:`KernelMaps`, which stays the fallback); either way the
    graph sees the same maps in a level order, and :meth:`PreparedInputs.feeds` names them.
    """
    if config.arch != "minkunet" or not native.available():
        return prepare_inputs(config, points)
    prepared = prepare_inputs(config, points, table_maps=True)
    if not isinstance(prepared.maps, TableMaps):  # no valid point
        return prepared
    tensors, rank = padded_tensors_from_tables(prepared.maps)
    order = torch.empty_like(rank)
    order[rank] = torch.arange(rank.shape[0])
    p2v = prepared.rows
    rows = torch.where(p2v >= 0, rank.index_select(0, p2v.clamp(min=0)), p2v)
    feats = prepared.feats.index_select(0, order)
    return PreparedInputs(feats, PaddedFeeds(tensors), rows, prepared.num_voxels, prepared.sizes)


def _prepare_fused(config: ModelConfig, points: Tensor, vs: float, sizes: tuple[int, ...]) -> PreparedInputs | None:
    """One cloud through the fused kernels' voxelizer and maps (None: let voxelize() report a bad cloud)."""
    res = voxelize_keys(points, vs)
    if res is None:
        return None
    keys, feats, p2v = res
    if len(keys) == 0:
        return PreparedInputs(None, None, p2v, 0, sizes)
    valid = p2v[p2v >= 0]
    vox = Voxels(unpack_keys(keys), feats, p2v, int(len(p2v) - len(valid)), torch.bincount(valid), 1)
    maps = table_maps_from_keys(keys, MinkUNet.num_levels, config.kernel_sizes)
    return PreparedInputs(voxel_features(config, vox).contiguous(), maps, p2v, len(keys), sizes)


def gather_points(
    voxel_outputs: dict[str, np.ndarray], point_rows: np.ndarray, embed_dim: int
) -> dict[str, np.ndarray]:
    """Per-voxel outputs -> per-point float32 arrays (zeros for dropped points)."""
    valid = point_rows >= 0
    out = {}
    for h, v in voxel_outputs.items():
        res = np.zeros((len(point_rows), embed_dim), dtype=np.float32)
        res[valid] = v[point_rows[valid]]
        out[h] = res
    return out


def fused_kernels_apply(model: torch.nn.Module) -> bool:
    """Whether ``model`` runs on the fused fp32 CPU kernels (forward and backward): a MinkUNet with
    fp32 weights on the CPU, where the kernels were built (``CLIP2SCENE_NATIVE=0`` turns them off)."""
    param = next(model.parameters())
    return (
        getattr(model.config, "arch", None) == "minkunet"
        and param.device.type == "cpu"
        and param.dtype == torch.float32
        and native.available()
    )


def encode_points(
    model: MinkUNet, points: Tensor | Sequence[Tensor], voxel_size: float | None = None
) -> list[dict[str, Tensor]]:
    """Per-point features for a batch of clouds ``[P_i, 3+F]``: prepare, run, gather back.

    Differentiable with respect to the weights (and the feature columns). Points dropped for
    NaN/Inf get zero features. Clouds move to the model's device.
    """
    clouds = [points] if isinstance(points, Tensor) else list(points)
    param = next(model.parameters())
    clouds = [torch.as_tensor(p).to(device=param.device, dtype=torch.float32) for p in clouds]
    prepared = prepare_inputs(model.config, clouds, voxel_size, table_maps=fused_kernels_apply(model))
    if prepared.num_voxels == 0:
        d = model.config.embed_dim
        return [{h: c.new_zeros((len(c), d)) for h in model.config.heads} for c in clouds]
    return prepared.to_point_tensors(model(prepared.feats.to(param.dtype), prepared.maps))
