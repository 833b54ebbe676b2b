"""``clip2scene export``: a checkpoint (or a named architecture) to ONNX, optionally a TensorRT engine."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

HELP = "export a 3D model to ONNX (inputs: voxel features + kernel maps) and optionally build a TensorRT engine"
LOG = logging.getLogger("clip2scene.export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("checkpoint", nargs="?", help="checkpoint directory (model.safetensors + model.json)")
    src.add_argument("--model", help="export a shipped architecture with random weights (e.g. minkunet18_tiny)")
    parser.add_argument("-o", "--output", help="ONNX path (default: <checkpoint>/model.onnx or ./<model>.onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--check", action="store_true", help="compare ONNX Runtime with eager torch on two clouds")
    parser.add_argument("--tensorrt", action="store_true", help="also build a TensorRT engine (needs CUDA + TensorRT)")
    parser.add_argument(
        "--fp16", action=argparse.BooleanOptionalAction, default=True, help="TensorRT fp16 (default on)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs=3,
        metavar=("MIN", "OPT", "MAX"),
        default=[1000, 30000, 120000],
        help="TensorRT optimization profile: level-0 voxel counts",
    )
    parser.add_argument("--cache-dir", help="where TensorRT engines are cached (default: next to the ONNX)")
    parser.add_argument("--build-only", action="store_true", help="build/cache the TensorRT engine and exit")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clip2scene_ros.inference.export import TENSORRT_OPS, example_points, export_onnx, graph_ops
    from clip2scene_ros.models import create_model, load_checkpoint

    if args.model:
        model = create_model(args.model).eval()
        out = Path(args.output or f"{args.model}.onnx")
    else:
        ckpt = Path(args.checkpoint)
        try:
            model, _, _ = load_checkpoint(ckpt)
        except (FileNotFoundError, ValueError) as e:
            LOG.error("%s", e)
            return 2
        out = Path(args.output) if args.output else ckpt / "model.onnx"
    path = export_onnx(model, out, opset=args.opset)
    ops = graph_ops(path)
    summary = {"onnx": str(path), "ops": sorted(ops), "unsupported_by_tensorrt": sorted(ops - TENSORRT_OPS)}
    LOG.info("wrote %s (%d operator types)", path, len(ops))
    if args.check:
        from clip2scene_ros.inference.backends import OnnxRuntimeBackend, TorchBackend

        ort_backend = OnnxRuntimeBackend(path)
        eager = TorchBackend(model)
        diffs = []
        for n in (None, 4000):
            pts = example_points(n, seed=7)
            a, b = ort_backend(pts), eager(pts)
            diffs.append(max(float(np.abs(a[h] - b[h]).max()) for h in a))
        summary["max_abs_diff_onnxruntime_vs_torch"] = diffs
        LOG.info("ONNX Runtime vs eager: max |diff| %s", diffs)
    if args.tensorrt:
        from clip2scene_ros.inference.tensorrt import TensorRTOptions, TensorRTUnavailable, build_engine

        opts = TensorRTOptions(
            fp16=args.fp16,
            min_voxels=args.profile[0],
            opt_voxels=args.profile[1],
            max_voxels=args.profile[2],
            cache_dir=args.cache_dir,
            build_only=args.build_only,
        )
        try:
            summary["engine"] = str(build_engine(path, opts))
        except TensorRTUnavailable as e:
            LOG.error("%s", e)
            print(json.dumps(summary))
            return 3
    print(json.dumps(summary))
    return 0
