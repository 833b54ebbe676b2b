"""How long does a TensorRT engine take to build, how fast does it run, and does it agree with eager?

Where a CUDA GPU and the TensorRT Python package exist: export the checkpoint (default: the shipped
student) to ONNX, build an fp16 engine from scratch (empty cache) with the optimization profile of
:class:`clip2scene_ros.inference.tensorrt.TensorRTOptions` (``--options`` YAML overrides its fields,
e.g. ``min_voxels``/``opt_voxels``/``max_voxels``), then run it on the real nuScenes keyframe (a
LiDAR-like frame when ../shared/data/real is absent) and compare with the eager fp32 torch backend on
the same points: engine build time, latency (median of ``--runs``, map building included, as the
node runs it), eager latency on the same GPU, max |difference| of the features and the share of equal
labels (argmax against the checkpoint's text embeddings). Elsewhere it prints why it cannot run and
a JSON line with ``skipped`` and the reason. The CPU is printed either way.

    .venv/bin/python benchmarks/tensorrt_build.py [--checkpoint DIR] [--options trt.yaml] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REAL = Path(os.environ.get("CLIP2SCENE_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


def frame() -> tuple[np.ndarray, str]:
    from clip2scene_ros.sparse.samples import lidar_like_scene, load_real_frame

    if REAL.is_dir():
        pts = load_real_frame(REAL, "nuscenes")
        pts[:, 3] /= 255.0  # the models read intensity in 0..1
        return pts, "real nuScenes keyframe"
    return lidar_like_scene(1, beams=32, azimuth_steps=1100), "synthetic 32-beam frame"


def timed(fn, runs: int) -> tuple[float, dict]:  # noqa: ANN001
    out = fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="student checkpoint (default: the shipped one)")
    ap.add_argument("--options", help="YAML with TensorRTOptions fields (profile, workspace, ...)")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()

    from clip2scene_ros.inference.cpu import cpu_info
    from clip2scene_ros.inference.tensorrt import TensorRTOptions, tensorrt_status

    cpu = cpu_info()
    print(cpu.describe())
    summary: dict = {"benchmark": "tensorrt_build", "cpu": cpu.as_dict()}
    ok, reason = tensorrt_status()
    if not ok:
        print(f"skipped: {reason}; this benchmark needs a CUDA GPU and TensorRT")
        print(json.dumps({**summary, "skipped": True, "reason": reason}))
        return 0

    import torch
    import yaml
    from safetensors.numpy import load_file

    from clip2scene_ros.inference.backends import create_backend
    from clip2scene_ros.inference.export import export_onnx
    from clip2scene_ros.models import load_checkpoint
    from clip2scene_ros.nodes.parameters import default_checkpoint

    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    fields = yaml.safe_load(Path(args.options).read_text()) if args.options else {}
    with tempfile.TemporaryDirectory() as tmp:
        opts = TensorRTOptions.from_dict({**fields, "fp16": True, "cache_dir": tmp, "build_only": False})
        onnx_path = export_onnx(load_checkpoint(ckpt)[0], Path(tmp) / "model.onnx")
        t = time.perf_counter()
        trt_backend = create_backend(
            "tensorrt", ckpt, device="cuda", precision="fp16", onnx_path=onnx_path, tensorrt=opts
        )
        build_s = time.perf_counter() - t
        eager = create_backend("torch", ckpt, device="cuda", precision="fp32")
        pts, source = frame()
        trt_ms, got = timed(lambda: trt_backend(pts), args.runs)
        eager_ms, ref = timed(lambda: (eager(pts), torch.cuda.synchronize())[0], args.runs)
    head = eager.heads[0]
    diff = float(np.abs(got[head] - ref[head]).max())
    text_file = ckpt / "text_embeddings.safetensors"
    agreement = None
    if text_file.is_file():
        text = next(iter(load_file(str(text_file)).values())).astype(np.float32)
        agreement = float(((got[head] @ text.T).argmax(1) == (ref[head] @ text.T).argmax(1)).mean())
    summary.update(
        skipped=False,
        gpu=torch.cuda.get_device_name(),
        checkpoint=str(ckpt),
        frame=source,
        points=len(pts),
        profile=[opts.min_voxels, opts.opt_voxels, opts.max_voxels],
        engine_build_s=round(build_s, 1),
        tensorrt_fp16_ms=round(trt_ms, 2),
        eager_fp32_cuda_ms=round(eager_ms, 2),
        ratio_vs_eager=round(trt_ms / eager_ms, 3),
        max_abs_diff=diff,
        label_agreement=agreement,
    )
    print(f"{summary['gpu']}: engine build {build_s:.1f} s (fp16, profile {summary['profile']})")
    print(f"{source}, {len(pts)} points: TensorRT fp16 {trt_ms:.2f} ms, eager fp32 {eager_ms:.2f} ms")
    print(f"max |diff| {diff:.3g}, labels equal to eager: {agreement}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
