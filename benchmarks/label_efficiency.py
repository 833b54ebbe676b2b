"""Label efficiency per architecture: 1 %-label fine-tuning from our pre-training against from
scratch, at the same budget, for MinkUNet and SPVCNN (or any registry model) on the synthetic split.

For each ``--models`` entry: pre-train the student on the synthetic train split (3 sweeps, the
``pretrain_synthetic`` config with the model swapped), fine-tune it with 1 % of the labelled train
frames, fine-tune the same architecture from scratch with the same frames, steps and learning
rates, and evaluate all three on the val split (mIoU over all points). A small CPU budget by
default (the paper's comparison is 1 % nuScenes: SPVCNN 56.3 from CLIP2Scene vs 42.2 from scratch);
pass larger ``--pretrain-steps``/``--finetune-steps`` for steadier figures. Prints a table; the
last line is JSON with the conditions (steps, threads, load average, seconds).

    .venv/bin/python benchmarks/label_efficiency.py --models minkunet18_tiny spvcnn_tiny --out-dir runs/label_eff
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["minkunet18_tiny", "spvcnn_tiny"])
    ap.add_argument("--out-dir", default="runs/label_efficiency")
    ap.add_argument("--teacher", default="default", help="teacher for pre-training (default: the bundled one)")
    ap.add_argument("--pretrain-steps", type=int, default=120)
    ap.add_argument("--finetune-steps", type=int, default=40)
    ap.add_argument("--train-scenes", type=int, default=2, help="pre-training scenes (x4 key frames)")
    ap.add_argument("--val-scenes", type=int, default=1, help="evaluation scenes (x4 key frames)")
    ap.add_argument("--points-per-ring", type=int, default=360)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from clip2scene_training.config import EvaluateConfig, FinetuneConfig, PretrainConfig, load_config
    from clip2scene_training.evaluate import evaluate
    from clip2scene_training.finetune import train as finetune
    from clip2scene_training.pretrain import train as pretrain

    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    sim = {"lidar.points_per_ring": args.points_per_ring}
    teacher = {"model": args.teacher, "vocabulary": "synthetic"}

    def data(split: str, scenes: int, sweeps: int, **kw) -> dict:
        options = {"split": split, "num_scenes": scenes, "key_frames_per_scene": 4, "key_every": 5}
        return {"kind": "synthetic", "options": {**options, "num_sweeps": sweeps, "sim_config": sim, **kw}}

    seconds: dict[str, float] = {}
    results: dict[str, dict] = {}

    def timed(name: str, fn, *a, **kw) -> dict:  # noqa: ANN001
        t = time.time()
        r = fn(*a, **kw)
        seconds[name] = round(time.time() - t, 1)
        print(f"[{name}] {seconds[name]} s", file=sys.stderr, flush=True)
        return r

    def miou(name: str, checkpoint: Path) -> float:
        ev = load_config(EvaluateConfig, {
            "checkpoint": str(checkpoint), "out_dir": str(out / f"eval_{name}"),
            "data": data("val", args.val_scenes, 1), "num_threads": args.threads})  # fmt: skip
        return timed(f"evaluate_{name}", evaluate, ev)["miou_all"]

    for model in args.models:
        base = dataclasses.asdict(load_config(PretrainConfig, "pretrain_synthetic"))
        cfg = load_config(PretrainConfig, {
            **base, "model": model, "max_steps": args.pretrain_steps, "num_threads": args.threads,
            "checkpoint_every": 1000, "teacher": teacher, "progress": False, "seed": args.seed,
            "out_dir": str(out / model / "pretrain"), "data": data("train", args.train_scenes, 3)})  # fmt: skip
        timed(f"{model}_pretrain", pretrain, cfg, resume="never")
        row = {"annotation_free": miou(f"{model}_annotation_free", out / model / "pretrain" / "student")}
        for name, init in (("from_pretrain", str(out / model / "pretrain" / "student")), ("from_scratch", None)):
            ft_cfg = load_config(FinetuneConfig, {
                "out_dir": str(out / model / f"finetune_{name}"), "init": init, "model": model,
                "label_fraction": 0.01, "max_steps": args.finetune_steps, "num_threads": args.threads,
                "checkpoint_every": 1000, "seed": args.seed, "progress": False,
                "data": data("train", 25, 1, render_cameras=False), "optim": {"lr": 0.02, "head_lr": 0.2}})  # fmt: skip
            ft = timed(f"{model}_finetune_{name}", finetune, ft_cfg, resume="never")
            row[name] = miou(f"{model}_{name}", out / model / f"finetune_{name}" / "student")
            row["labelled_frames"] = ft["labelled_samples"]
        row["gain"] = round(row["from_pretrain"] - row["from_scratch"], 2)
        results[model] = row

    print(f"\n{'model':<18}{'annotation-free':>16}{'1% from pre-train':>19}{'1% from scratch':>17}{'gain':>7}")
    for model, r in results.items():
        print(
            f"{model:<18}{r['annotation_free']:>16.1f}{r['from_pretrain']:>19.1f}{r['from_scratch']:>17.1f}"
            f"{r['gain']:>7.1f}"
        )
    summary = {
        "benchmark": "label_efficiency",
        "results": results,
        "steps": {"pretrain": args.pretrain_steps, "finetune": args.finetune_steps},
        "train_scenes": args.train_scenes,
        "val_scenes": args.val_scenes,
        "teacher": teacher,
        "threads": args.threads,
        "seed": args.seed,
        "load_average": os.getloadavg()[0],
        "seconds": seconds,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
