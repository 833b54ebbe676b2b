"""What do the teacher's test-time options cost? CPU time per image with and without them.

Times ``Teacher.dense_features`` (the call that training caches and camera fusion runs) on
synthetic camera images, single pass vs a shifted second tile grid (``tile_overlap``) vs that
plus the mirrored image (``flip_average``), all in the same process; an optional second teacher
(``--reference``, e.g. an older teacher directory) gives a ratio between models.

    .venv/bin/python benchmarks/teacher_speed.py --threads 1
    .venv/bin/python benchmarks/teacher_speed.py --reference /tmp/old_teacher

Prints a table; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def cpu_ms_per_image(teacher, images: np.ndarray, repeats: int) -> float:
    teacher.dense_features(images[:2])  # warm-up: allocations, positional-embedding resize
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        teacher.dense_features(images)
        best = min(best, time.process_time() - start)
    return 1000.0 * best / len(images)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="default", help="'default' or a teacher directory")
    p.add_argument("--reference", default=None, help="a second teacher directory to compare with")
    p.add_argument("--images", type=int, default=12, help="synthetic camera images (two frames of six)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest counts")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    from clip2scene_ros.sim import SimConfig, generate_sequence
    from clip2scene_ros.teacher import create_teacher

    torch.set_num_threads(args.threads)
    frames = generate_sequence(SimConfig.default(), 950_001, -(-args.images // 6), cameras=True)
    images = np.stack([cam.image for frame in frames for cam in frame.cameras])[: args.images]

    teacher = create_teacher(args.teacher)
    options = [(False, False), (True, False), (True, True)]
    if teacher.config.tile is None:  # a real CLIP without tiling: only the mirror applies
        options = [(False, False), (False, True)]
    names = {(False, False): "single pass", (True, False): "tile_overlap", (False, True): "flip_average",
             (True, True): "tile_overlap + flip_average"}
    ms = {
        names[o]: cpu_ms_per_image(teacher.with_config(tile_overlap=o[0], flip_average=o[1]), images, args.repeats)
        for o in options
    }
    default_ms = ms[names[(teacher.config.tile_overlap, teacher.config.flip_average)]]  # the configured variant
    reference_ms = None
    if args.reference:
        reference_ms = cpu_ms_per_image(create_teacher(args.reference), images, args.repeats)

    base = ms["single pass"]
    print(f"teacher {args.teacher} ({teacher.model_id}), {len(images)} images {images.shape[1]}x{images.shape[2]}")
    print(f"{'variant':32s} {'CPU ms/image':>12s} {'x single pass':>14s}")
    for name, value in ms.items():
        print(f"{name:32s} {value:12.1f} {value / base:14.2f}")
    print(f"{'as configured (default options)':32s} {default_ms:12.1f} {default_ms / base:14.2f}")
    if reference_ms is not None:
        print(f"{'reference ' + args.reference:32s} {reference_ms:12.1f}  (configured / reference "
              f"{default_ms / reference_ms:.2f}x)")
    result = {
        "benchmark": "teacher_speed",
        "teacher": args.teacher,
        "model_id": teacher.model_id,
        "threads": args.threads,
        "images": len(images),
        "cpu_ms_per_image": {k: round(v, 2) for k, v in ms.items()},
        "configured_cpu_ms_per_image": round(default_ms, 2),
        "configured_over_single_pass": round(default_ms / base, 3),
        "reference": args.reference,
        "reference_cpu_ms_per_image": None if reference_ms is None else round(reference_ms, 2),
        "configured_over_reference": None if reference_ms is None else round(default_ms / reference_ms, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
