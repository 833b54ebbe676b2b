"""What does network width x voxel size cost on the CPU (the speed half of the accuracy/speed table)?

MinkUNet18 at widths 0.25 (the shipped student's), 0.5, 0.75 and 1.0 x voxel sizes 0.05-0.2 m, on
the real nuScenes keyframe (34,688 points; a LiDAR-like 32-beam frame when ../shared/data/real is
absent). Each cell times what the node's inference step does per frame: voxelize, build the kernel
maps, run the BN-folded fp32 forward (random weights: the time does not depend on them; the fused
CPU kernels and their pair maps where g++ built them, as the torch backend runs, else the torch
path; ``--torch-path`` forces the latter), median of
``--runs`` rounds, cells interleaved round by round so that load from other processes hits them
alike. Printed: ms and the ratio to the shipped configuration (width 0.25, 0.1 m) measured in the
same rounds, voxel count, parameters. Accuracy needs one training run per cell (the synthetic
recipe, ~6-60 CPU-minutes each) and is not measured here; ``--accuracy FILE`` (default
``benchmarks/accuracy_cells.json``, the cells measured so far) merges a JSON
``{"<width>@<voxel>": {"miou": ...}}`` from such runs into the table and names the cell the rule
"the fastest within 2 mIoU of the best" picks among the measured ones. The CPU model, flags and the
load average are printed; the last line is one JSON object.

    .venv/bin/python benchmarks/accuracy_speed.py [--runs 3] [--threads 1] [--accuracy runs.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REAL = Path(os.environ.get("CLIP2SCENE_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
WIDTHS = (0.25, 0.5, 0.75, 1.0)
VOXELS = (0.05, 0.1, 0.15, 0.2)
DEFAULT = (0.25, 0.1)  # the shipped student


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS))
    ap.add_argument("--voxels", type=float, nargs="+", default=list(VOXELS))
    ap.add_argument("--accuracy", default=str(REPO / "benchmarks" / "accuracy_cells.json"),
                    help="JSON {'<width>@<voxel>': {'miou': ...}} from training runs ('' for none)")  # fmt: skip
    ap.add_argument("--torch-path", action="store_true", help="time the torch engine, not the fused kernels")
    args = ap.parse_args()

    from clip2scene_ros.inference.cpu import cpu_info
    from clip2scene_ros.inference.export import prepare_inputs
    from clip2scene_ros.models import create_model
    from clip2scene_ros.sparse import native
    from clip2scene_ros.sparse.samples import lidar_like_scene, load_real_frame

    cpu = cpu_info()
    print(cpu.describe())
    torch.set_num_threads(args.threads)
    if REAL.is_dir():
        pts, source = load_real_frame(REAL, "nuscenes"), "real nuScenes keyframe"
        pts[:, 3] /= 255.0
    else:
        pts, source = lidar_like_scene(1, beams=32, azimuth_steps=1100), "synthetic 32-beam frame"
    accuracy = json.loads(Path(args.accuracy).read_text()) if args.accuracy and Path(args.accuracy).is_file() else {}
    cells = sorted({*((w, v) for w in args.widths for v in args.voxels), DEFAULT})
    models = {}
    for w, v in cells:
        torch.manual_seed(0)
        models[(w, v)] = create_model("minkunet18", width=w, voxel_size=v, heads=["global"], embed_dim=64).fold_bn()

    fused = native.available() and not args.torch_path

    def run(model) -> int:  # noqa: ANN001
        with torch.no_grad(), native.kernel_threads(args.threads) if fused else contextlib.nullcontext():
            prep = prepare_inputs(model.config, pts, table_maps=fused)
            model(prep.feats, prep.maps)
        return prep.num_voxels

    load0 = os.getloadavg()[0]
    times: dict = {c: [] for c in cells}
    voxels = {c: run(models[c]) for c in cells}  # warm-up
    for _ in range(args.runs):
        for c in cells:
            t = time.perf_counter()
            run(models[c])
            times[c].append(time.perf_counter() - t)
    ms = {c: statistics.median(v) * 1e3 for c, v in times.items()}
    ref = ms[DEFAULT]
    print(f"\n{source}, {len(pts)} points, {args.threads} thread(s), {'fused' if fused else 'torch'} path, "
          f"median of {args.runs}; "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'width':>6}{'voxel m':>9}{'voxels':>8}{'params M':>10}{'ms':>9}{'vs shipped':>12}{'mIoU':>7}")
    rows = []
    for w, v in cells:
        params = sum(p.numel() for p in models[(w, v)].parameters()) / 1e6
        miou = accuracy.get(f"{w}@{v}", {}).get("miou")
        rows.append({"width": w, "voxel_size": v, "voxels": voxels[(w, v)], "params_m": round(params, 2),
                     "ms": round(ms[(w, v)], 1), "ratio_vs_shipped": round(ms[(w, v)] / ref, 3),
                     "miou": miou})  # fmt: skip
        print(f"{w:>6}{v:>9}{voxels[(w, v)]:>8}{params:>10.2f}{ms[(w, v)]:>9.1f}{ms[(w, v)] / ref:>12.3f}"
              f"{'' if miou is None else f'{miou:.1f}':>7}")  # fmt: skip
    measured = [r for r in rows if r["miou"] is not None]
    pick = None
    if measured:
        best = max(r["miou"] for r in measured)
        pick = min((r for r in measured if r["miou"] >= best - 2.0), key=lambda r: r["ms"])
        print(f"measured cells: {len(measured)} of {len(rows)}; best mIoU {best:.1f}; the fastest within 2 of it: "
              f"width {pick['width']} @ {pick['voxel_size']} m ({pick['miou']:.1f} mIoU, "
              f"{pick['ratio_vs_shipped']:.2f}x)")  # fmt: skip
    summary = {
        "benchmark": "accuracy_speed",
        "cpu": cpu.as_dict(),
        "threads": args.threads,
        "path": "fused" if fused else "torch",
        "frame": source,
        "points": len(pts),
        "runs": args.runs,
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "accuracy_measured": bool(accuracy),
        "rule_pick": None if pick is None else f"{pick['width']}@{pick['voxel_size']}",
        "cells": rows,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
