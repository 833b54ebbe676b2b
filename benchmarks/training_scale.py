"""Does pre-training scale with the dataset? Target preparation and one streamed epoch on N and
10 x N key frames of a nuScenes-layout dataset, plus 2-process torchrun against 1 process.

The synthetic world writes the datasets in the official nuScenes layout (v1.0 tables, key frames
+ sweeps + six cameras, lidarseg), which nuscenes-devkit loads and the nuScenes adapter reads. For
each size: ``clip2scene prepare targets`` (time and bytes per sample), then one epoch of
``clip2scene train pretrain`` from the cache with the samples read in the training process
(DataLoader workers 0, so the peak RSS covers everything). The N set runs 10 epochs, i.e. as many
steps as one epoch of the 10 x N set: the allocator's peak grows over the first steps whatever the
data, so equal step counts isolate what the dataset's size adds. Then 2 processes through the real
``torchrun`` against 1 process on the 10 x N set, same global batch and steps. Each run is its own
process (peak RSS per run). Prints a table; the last line is JSON with ``rss_peak_ratio`` (10N
over N; target <= 1.2), ``samples_per_s``, ``prepare_s_per_sample``, ``cache_bytes_per_sample`` and
``torchrun_speedup``.

    .venv/bin/python benchmarks/training_scale.py                 # N = 4: about 20 min on 2 idle cores
    .venv/bin/python benchmarks/training_scale.py --n 2 --teacher-random --steps 4   # plumbing check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

KEYS_PER_SCENE = 10


def write_nuscenes(root: Path, key_frames: int, sim_overrides: dict, seed0: int) -> float:
    """A nuScenes-layout dataset with ``key_frames`` key frames (one sweep between key frames)."""
    from clip2scene_ros.sim import SimConfig
    from clip2scene_ros.sim.writers import write_dataset

    if (root / "v1.0-trainval" / "sample.json").is_file():
        return 0.0
    t0 = time.time()
    cfg = SimConfig.default().with_overrides(**sim_overrides)
    scenes = math.ceil(key_frames / KEYS_PER_SCENE)
    per_scene = math.ceil(key_frames / scenes)
    # lead-in 2 frames, then a key frame every 2nd frame: 2k + 1 frames hold k key frames
    write_dataset("nuscenes", root, cfg, [seed0 + s for s in range(scenes)], 2 * per_scene + 1,
                  keyframe_every=2, lead_in=2, progress=False)  # fmt: skip
    return time.time() - t0


def devkit_check(root: Path) -> int | None:
    """Key frames as nuscenes-devkit counts them (None without the devkit)."""
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError:
        return None
    return len(NuScenes(version="v1.0-trainval", dataroot=str(root), verbose=False).sample)


def run_json(cmd: list[str], threads: int) -> tuple[dict, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="key frames of the small set (the large one has 10 x N)")
    ap.add_argument("--out-dir", default="runs/training_scale")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    ap.add_argument("--prepare-workers", type=int, default=2)
    ap.add_argument("--teacher", default="default")
    ap.add_argument("--teacher-random", action="store_true", help="random tiny teacher (plumbing check only)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps of each torchrun comparison run")
    ap.add_argument("--points-per-ring", type=int, default=540)
    ap.add_argument("--camera-size", default="400x224", help="camera width x height of the written dataset")
    args = ap.parse_args()

    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.camera_size.split("x"))
    sim = {"lidar.points_per_ring": args.points_per_ring, "cameras.width": width, "cameras.height": height,
           "threads": 1}  # fmt: skip
    teacher = (
        {"model": "c2s-tiny-vit-p16", "random_init": True, "vocabulary": "synthetic"}
        if args.teacher_random
        else {"model": args.teacher, "vocabulary": "synthetic"}
    )
    py = sys.executable
    load0 = os.getloadavg()[0]
    rows, result = [], {}
    for label, keys in (("N", args.n), ("10N", 10 * args.n)):
        root = out / f"nuscenes_{keys}"
        write_s = write_nuscenes(root, keys, sim, seed0=910_000 if label == "N" else 920_000)
        devkit = devkit_check(root)
        cfg = {
            "out_dir": str(out / f"pretrain_{keys}"), "model": "minkunet18_tiny", "batch_size": 1, "grad_accum": 2,
            "epochs": 10 if label == "N" else 1, "seed": 0, "num_threads": args.threads, "progress": False,
            "augment": True,
            "checkpoint_every": 1000, "data": {"kind": "nuscenes", "options": {
                "root": str(root), "version": "v1.0-trainval", "num_sweeps": 3},
                "pairing": {"min_depth": 1.0, "occlusion": "auto", "one_camera_per_point": True}},
            "teacher": teacher, "targets": {"cache_dir": str(out / "target_cache"), "workers": args.prepare_workers},
            "loader": {"workers": 0}, "optim": {"lr": 0.3},
        }  # fmt: skip
        path = out / f"pretrain_{keys}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        prep, _ = run_json([py, "-m", "clip2scene_training.prepare_targets", "--config", str(path),
                            "--no-progress"], args.threads)  # fmt: skip
        train, train_wall = run_json([py, "-m", "clip2scene_training.pretrain", "--config", str(path),
                                      "--resume", "never"], args.threads)  # fmt: skip
        rows.append({
            "set": label, "key_frames": keys, "devkit_samples": devkit, "write_s": round(write_s, 1),
            "prepare_s_per_sample": prep["s_per_sample"], "cache_bytes_per_sample": prep["bytes_per_sample"],
            "train_steps": train["steps"], "train_s": train["seconds"], "samples_per_s": train["samples_per_s"],
            "peak_rss_mb": train["peak_rss_mb"], "skipped": train["skipped_samples"]["count"],
        })  # fmt: skip
        result[label] = (path, train, prep)

    # torchrun: the same global batch (2) and steps, 2 processes x 1 against 1 process x 2 accumulated
    path10 = result["10N"][0]
    common = ["--config", str(path10), "--resume", "never", "--set", f"max_steps={args.steps}"]
    one, _ = run_json([py, "-m", "clip2scene_training.pretrain", *common,
                       "--set", f"out_dir={out / 'tr1'}"], args.threads)  # fmt: skip
    two, _ = run_json([py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       "-m", "clip2scene_training.pretrain", *common, "--set", "grad_accum=1",
                       "--set", f"out_dir={out / 'tr2'}"], args.threads)  # fmt: skip
    speedup = two["samples_per_s"] / one["samples_per_s"] if one["samples_per_s"] else None

    print(f"\nload average at start {load0:.1f}, at end {os.getloadavg()[0]:.1f}; {args.threads} torch thread(s) "
          f"per process; {args.points_per_ring} points per ring, cameras {width}x{height}, 3 sweeps\n")  # fmt: skip
    head = list(rows[0])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in head) + " |")
    print(f"\ntorchrun {args.steps} steps, global batch 2: 1 process {one['samples_per_s']} samples/s, "
          f"2 processes {two['samples_per_s']} samples/s (x{speedup:.2f})\n")  # fmt: skip
    n_row, big = rows[0], rows[1]
    summary = {
        "benchmark": "training_scale",
        "n": args.n,
        "rss_peak_ratio": round(big["peak_rss_mb"] / n_row["peak_rss_mb"], 3),
        "rss_peak_mb": {"N": n_row["peak_rss_mb"], "10N": big["peak_rss_mb"]},
        "samples_per_s": big["samples_per_s"],
        "prepare_s_per_sample": big["prepare_s_per_sample"],
        "cache_bytes_per_sample": big["cache_bytes_per_sample"],
        "torchrun_speedup": round(speedup, 3) if speedup else None,
        "torchrun_samples_per_s": {"1": one["samples_per_s"], "2": two["samples_per_s"]},
        "rows": rows,
        "threads": args.threads,
        "teacher": teacher,
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
