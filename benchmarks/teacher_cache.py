"""Is the dense-feature cache worth it? Epoch time with cached fp16 features vs teacher on the fly.

An "epoch" fetches the dense teacher features of every image once, in batches, as the 3D student's
training loop does. Reference = computing them with the teacher in the same process.

    .venv/bin/python benchmarks/teacher_cache.py --teacher ViT-B-16 --random-init --images 32
    .venv/bin/python benchmarks/teacher_cache.py --teacher default --images 96

Prints a table; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="default", help="'default', a teacher directory or an open_clip name")
    p.add_argument("--weights", default=None)
    p.add_argument("--random-init", action="store_true", help="allow an architecture without weights")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", default="224x400", help="image size HxW")
    p.add_argument("--epochs", type=int, default=2, help="cached epochs to time after the filling epoch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=None, help="default: a temporary directory")
    args = p.parse_args()

    from clip2scene_ros.teacher import DenseFeatureCache, create_teacher

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    teacher = create_teacher(args.teacher, args.weights, random_init=args.random_init)
    images = np.random.default_rng(0).integers(0, 256, (args.images, h, w, 3), dtype=np.uint8)
    keys = [f"img{i:05d}" for i in range(args.images)]
    batches = [
        list(range(s, min(s + args.batch_size, args.images))) for s in range(0, args.images, args.batch_size)
    ]

    def epoch(fetch) -> float:
        start = time.perf_counter()
        for b in batches:
            feats = fetch(b)
            feats.sum().item()  # touch the data like a training step would
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.cache_dir or tmp) / "dense"
        cache = DenseFeatureCache(root, teacher)
        cache.clear()
        on_the_fly = epoch(lambda b: teacher.dense_features(images[b]))
        fill = epoch(lambda b: cache.features([keys[i] for i in b], images[b]))
        cached_times = []
        for _ in range(args.epochs):
            fresh = DenseFeatureCache(root, teacher)  # reopen: memory-mapped reads from disk
            cached_times.append(epoch(lambda b, c=fresh: c.features([keys[i] for i in b], lambda _p: None)))
        cached = float(np.median(cached_times))
        size_mb = sum(f.stat().st_size for f in root.glob("chunk_*.npy")) / 2**20
        shape = list(cache.get(keys[0]).shape)

    rows = [
        ("teacher on the fly (reference)", on_the_fly, 1.0),
        ("first epoch, filling the cache", fill, fill / on_the_fly),
        ("cached epoch (fp16 memmap)", cached, cached / on_the_fly),
    ]
    print(
        f"teacher {args.teacher} ({teacher.model_id}), {args.images} images {h}x{w}, features {shape} fp16, "
        f"cache {size_mb:.1f} MB, {args.threads} threads"
    )
    print(f"{'epoch':<34}{'seconds':>10}{'x reference':>14}")
    for name, sec, ratio in rows:
        print(f"{name:<34}{sec:>10.3f}{ratio:>14.3f}")
    print(
        json.dumps(
            {
                "benchmark": "teacher_cache",
                "teacher": str(args.teacher),
                "images": args.images,
                "image_size": [h, w],
                "feature_shape": shape,
                "cache_mb": round(size_mb, 2),
                "on_the_fly_s": round(on_the_fly, 4),
                "fill_s": round(fill, 4),
                "cached_s": round(cached, 4),
                "speedup": round(on_the_fly / cached, 1),
                "cached_over_on_the_fly": round(cached / on_the_fly, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
