"""How much faster is a CPU training step on the fused kernels than on the torch engine?

One forward + backward + SGD step of a MinkUNet (default ``minkunet18_tiny``, BatchNorm in train mode)
on a batch of LiDAR-like clouds, run on both engines: the fused fp32 kernels with their pair maps
(``prepare_inputs(..., table_maps=True)``; what ``encode_points`` picks on CPU) and the torch
engine (``build_kernel_maps`` maps, autograd through gathers and matmuls). Each step includes
voxelization and map building, as in training. The two paths alternate step by step so that load
from other processes hits them alike; the median step time of each is printed with the ratio, the
CPU model and flags and the load average. The last line is one JSON object.

    .venv/bin/python benchmarks/training_step.py [--model minkunet18_tiny] [--clouds 2] [--steps 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from clip2scene_ros.inference.cpu import cpu_info  # noqa: E402
from clip2scene_ros.models import create_model  # noqa: E402
from clip2scene_ros.models.inputs import prepare_inputs  # noqa: E402
from clip2scene_ros.sparse import native  # noqa: E402
from clip2scene_ros.sparse.samples import lidar_like_scene  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minkunet18_tiny")
    ap.add_argument("--clouds", type=int, default=2, help="clouds per step (32 beams, ~35k points each)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    print(cpu_info().describe(), f"| load average {os.getloadavg()[0]:.1f}", flush=True)
    if not native.available():
        print(json.dumps({"benchmark": "training_step", "skipped": f"fused kernels unavailable: {native._failed}"}))
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = create_model(args.model).train()
    cfg = base.config
    cols = 3 + len([f for f in cfg.in_features if f == "intensity"])
    clouds = [torch.from_numpy(lidar_like_scene(s, beams=32, azimuth_steps=1080)[:, :cols]).float()
              for s in range(args.clouds)]  # fmt: skip
    models = {"torch_engine": base, "fused": copy.deepcopy(base)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
    probe: dict = {}

    def step(name: str) -> float:
        model, opt = models[name], opts[name]
        opt.zero_grad(set_to_none=True)
        prep = prepare_inputs(cfg, clouds, table_maps=name == "fused")
        out = model(prep.feats, prep.maps)
        feats = next(iter(out.values()))[prep.rows.clamp(min=0)]
        if "w" not in probe:
            probe["w"] = torch.randn(feats.shape[1])
        loss = (feats @ probe["w"]).square().mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.steps + 1):
        for name in models:
            t = time.perf_counter()
            step(name)
            if r:  # round 0 warms up
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    voxels = prepare_inputs(cfg, clouds).num_voxels
    points = sum(len(c) for c in clouds)
    print(f"{args.model}, {args.clouds} clouds ({points} points, {voxels} voxels), {args.threads} thread(s)")
    for k, v in med.items():
        print(f"{k:14s} {v:8.1f} ms/step")
    ratio = med["fused"] / med["torch_engine"]
    print(f"fused / torch engine: {ratio:.3f} ({1 / ratio:.2f}x faster)")
    print(json.dumps({
        "benchmark": "training_step", "model": args.model, "points": points, "voxels": voxels,
        "threads": args.threads, "ms_per_step": {k: round(v, 1) for k, v in med.items()},
        "fused_over_torch": round(ratio, 3), "load_average": os.getloadavg()[0],
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
