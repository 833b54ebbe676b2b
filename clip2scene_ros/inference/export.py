"""Export a MinkUNet to ONNX: voxel features + kernel maps in, per-voxel head features out.

The kernel maps (built outside the graph by :func:`clip2scene_ros.sparse.build_kernel_maps`) are
graph inputs, so the graph holds only Gather, MatMul, Slice, Concat, Add, Relu, ... which ONNX
Runtime and TensorRT run. Voxel and pair counts are dynamic axes (``n0..n4``, ``m0..m4``).
A JSON sidecar (``<model>.onnx.json``) carries the model config; a runtime prepares the graph's
inputs with :func:`clip2scene_ros.models.inputs.prepare_inputs`, as every other path does.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from clip2scene_ros.models import ExportModule, MinkUNet
from clip2scene_ros.models.inputs import graph_input_names, prepare_inputs
from clip2scene_ros.models.spvcnn import point_dynamic_axes
from clip2scene_ros.sparse.kmap import OFFSET_GROUPS, ROW_BUCKETS
from clip2scene_ros.sparse.samples import lidar_like_scene

OPSET = 17
# /2: 4 offset groups and 4 row buckets per level (was 3 and 3), Gemm for the centre offset
# /3: row-bucket tables and down-sampling child tables column-major ([J, N], [8, N]), summed by a
#     MatMul with a row of ones instead of ReduceSum
SIDECAR_FORMAT = "clip2scene_ros.onnx/3"
# Operators the TensorRT 10 ONNX parser imports natively (onnx-tensorrt operators.md), limited to
# those a plain dense-math graph like ours may use. No Scatter*, Unique, NonZero, TopK or Loop.
TENSORRT_OPS = frozenset(
    {
        "Add", "Cast", "Concat", "Constant", "ConstantOfShape", "Div", "Expand", "Flatten", "Gather",
        "Gemm", "Identity", "MatMul", "Mul", "Relu", "Reshape", "Shape", "Slice", "Squeeze", "Sub",
        "Transpose", "Unsqueeze", "ReduceSum",
    }
)  # fmt: skip


@contextlib.contextmanager
def _without_jit_lint():
    """Skip TorchScript's graph lint during export: a debug check that is quadratic in the graph
    size (~75 s of a 2-minute export of MinkUNet18); the exported graph is validated by
    onnx.checker and by running it instead."""
    original = torch._C._jit_pass_lint
    torch._C._jit_pass_lint = lambda graph: None
    try:
        yield
    finally:
        torch._C._jit_pass_lint = original


def input_names(num_levels: int = MinkUNet.num_levels, arch: str = "minkunet") -> list[str]:
    return graph_input_names(num_levels, arch)


def dynamic_axes(
    heads: list[str], num_levels: int = MinkUNet.num_levels, arch: str = "minkunet"
) -> dict[str, dict[int, str]]:
    """Voxel counts n<s>; per offset group g: offsets k<s>_<g>, padded pairs p<s>_<g>; per row
    bucket b: rows n<s>_<b>, padded neighbours j<s>_<b>; children per slot q<s>; an SPVCNN adds
    its point inputs (points np) and gives per-point outputs."""
    axes: dict[str, dict[int, str]] = {"feats": {0: "n0"}}
    if arch == "spvcnn":
        axes.update(point_dynamic_axes())
    for s in range(num_levels):
        for g in range(OFFSET_GROUPS):
            axes[f"subm{s}_pidx{g}"] = {0: f"k{s}_{g}", 1: f"p{s}_{g}"}
            axes[f"subm{s}_poff{g}"] = {0: f"k{s}_{g}"}
        for b in range(ROW_BUCKETS):
            axes[f"subm{s}_ptable{b}"] = {0: f"j{s}_{b}", 1: f"n{s}_{b}"}
    for s in range(num_levels - 1):
        axes[f"down{s}_fine"] = {1: f"q{s}"}
        axes[f"down{s}_parent"] = {1: f"q{s}"}
        axes[f"down{s}_child"] = {1: f"n{s + 1}"}
        axes[f"down{s}_inv"] = {0: f"n{s}"}
    for h in heads:
        axes[h] = {0: "np" if arch == "spvcnn" else "n0"}
    return axes


def example_points(num_points: int | None = None, seed: int = 0) -> np.ndarray:
    """A LiDAR-like cloud for tracing and checks (32 beams)."""
    pts = lidar_like_scene(seed, beams=32, azimuth_steps=1080)
    if num_points is not None:
        pts = pts[np.random.default_rng(seed).permutation(len(pts))[:num_points]]
    return pts


def export_onnx(
    model: MinkUNet,
    path: str | Path,
    example: np.ndarray | None = None,
    opset: int = OPSET,
) -> Path:
    """Write ``path`` (ONNX, BatchNorm folded, fp32) and ``path.json`` (sidecar); returns ``path``."""
    if model.config.stem_kernel != 3:
        raise ValueError(
            f"ONNX export needs stem_kernel 3 (one map per level); this model uses {model.config.stem_kernel}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).float().cpu().eval()
    if not m.bn_folded:
        m.fold_bn()
    prepared = prepare_inputs(m.config, example_points() if example is None else example)
    if prepared.num_voxels == 0:
        raise ValueError("the example cloud for export has no valid points")
    names = input_names(arch=m.config.arch)
    feeds = prepared.feeds()
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    heads = list(m.config.heads)
    with warnings.catch_warnings(), _without_jit_lint():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ExportModule(m),
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=heads,
            dynamic_axes=dynamic_axes(heads, arch=m.config.arch),
            do_constant_folding=True,
        )
    sidecar = {
        "format": SIDECAR_FORMAT,
        "config": m.config.to_dict(),
        "inputs": names,
        "outputs": heads,
        "opset": opset,
        "sha256": file_sha256(path),
    }
    Path(str(path) + ".json").write_text(json.dumps(sidecar, indent=2))
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sidecar(onnx_path: str | Path) -> dict:
    side = Path(str(onnx_path) + ".json")
    if not side.is_file():
        raise FileNotFoundError(f"{side} is missing: re-export with `clip2scene export` (it writes both files)")
    meta = json.loads(side.read_text())
    if meta.get("format") != SIDECAR_FORMAT:
        raise ValueError(
            f"{side}: format {meta.get('format')!r}, this version reads {SIDECAR_FORMAT!r} (its graph "
            "inputs differ): re-export the checkpoint with `clip2scene export`"
        )
    return meta


def graph_ops(onnx_path: str | Path) -> set[str]:
    """Operator types used anywhere in the graph (including subgraphs)."""
    import onnx

    model = onnx.load(str(onnx_path))
    ops: set[str] = set()

    def walk(graph) -> None:  # noqa: ANN001
        for node in graph.node:
            ops.add(node.op_type)
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)

    walk(model.graph)
    return ops
