"""The synthetic CLIP2Scene recipe over several seeds: teacher vs annotation-free student, 1 vs 3
sweeps (Eq. 1 on the key frame only, as in the paper, and on every sweep), and 1 %-label
fine-tuning from our pre-training against from scratch, on the held-out synthetic split.

For each seed (model initialisation, data order and augmentation; the scenes are the fixed splits):
  1. pre-train the student (minkunet18_tiny, paper losses, ``pretrain_synthetic.yaml``) on the
     train split with 3 sweeps, Eq. 1 on every sweep's paired points (the shipped default);
  2. the same with Eq. 1 on the key frame only (``loss.semantic_on_sweeps=false``, the paper's
     formulation; Eq. 2-4 still uses all sweeps);
  3. the same with 1 sweep (key frame only);
  4. evaluate each on the val split (default 6 scenes x 4 key frames = 24 frames): mIoU on
     camera-seen points, on points no camera sees averaged over the same classes as camera-seen
     (classes present in both), and the teacher projected onto the camera-seen points;
  5. fine-tune with 1 % of the labelled train frames (every 100th key frame) from the step-1
     student, and from scratch twice: with the same fine-tuning steps, and with the same total
     step budget (pre-training + fine-tuning steps); evaluate on val.
Reported as mean +- sample standard deviation over the seeds. The teacher targets are cached once
(``targets.cache_dir``) and shared by every seed and both 3-sweep variants.

Each stage is also a CLI call (``clip2scene train pretrain --config pretrain_synthetic --set ...``);
the effective configs are written next to the outputs. Prints a table; the last line is JSON.

    .venv/bin/python benchmarks/synthetic_recipe.py --out-dir runs/recipe   # 3 seeds: 14-23 min per seed at
                                                                           # 1 thread on the fused CPU kernels, load 3-5

Finished stages are kept: run the same command again after a kill and it goes on where it stopped.
Seeds can run apart (``--seeds 2 --out-dir runs/recipe_b`` on another core or machine) and be
brought together with ``--merge-from runs/recipe_b``, which copies their finished stages in.
    .venv/bin/python benchmarks/synthetic_recipe.py --quick --teacher-random       # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

METRICS = (
    ("teacher_miou_seen", "teacher projected (camera-seen points)"),
    ("student_miou_seen", "student 3 sweeps, camera-seen points"),
    ("student_miou_unseen_same_classes", "student 3 sweeps, no-camera points (same classes)"),
    ("student_miou_unseen", "student 3 sweeps, no-camera points (their classes)"),
    ("student_miou_all", "student 3 sweeps, all points"),
    ("student_keyeq1_miou_seen", "3 sweeps, Eq. 1 on key frame only, camera-seen"),
    ("student_keyeq1_miou_all", "3 sweeps, Eq. 1 on key frame only, all points"),
    ("student_1sweep_miou_seen", "student 1 sweep, camera-seen points"),
    ("student_1sweep_miou_all", "student 1 sweep, all points"),
    ("finetune_1pct_pretrained", "1% labels, from our pre-training"),
    ("finetune_1pct_scratch", "1% labels, from scratch (same fine-tuning steps)"),
    ("finetune_1pct_scratch_same_budget", "1% labels, from scratch (same total steps)"),
)


def same_class_miou(result: dict, a: str = "camera_unseen", b: str = "camera_seen") -> float | None:
    """Mean IoU of ``a`` over the classes present in both ``a`` and ``b``."""
    pairs = [x for x, y in zip(result.get(f"iou_{a}", []), result.get(f"iou_{b}", []), strict=False)
             if x is not None and y is not None]  # fmt: skip
    return round(sum(pairs) / len(pairs), 2) if pairs else None


def mean_std(values: list[float | None]) -> dict:
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    m = sum(v) / len(v)
    sd = (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
    return {"mean": round(m, 2), "std": round(sd, 2), "n": len(v)}


def check_reusable(out: Path, recipe: dict, fresh: bool) -> bool:
    """Whether finished stages in ``out`` may be reused: only those of the same recipe (recorded in
    ``recipe.json``); another recipe in the same directory is refused rather than mixed in."""
    path = out / "recipe.json"
    if fresh or not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recipe, indent=1, sort_keys=True))
        adopt = not fresh and ((out / "per_seed.json").is_file() or any(out.glob("seed*/*/student")))
        if adopt:  # written before runs recorded their recipe
            print(f"{out}: reusing finished stages of an earlier run (no recipe.json; taken to be this recipe)",
                  file=sys.stderr, flush=True)  # fmt: skip
        return adopt
    earlier = json.loads(path.read_text())
    if earlier != recipe:
        diff = sorted(k for k in set(earlier) | set(recipe) if earlier.get(k) != recipe.get(k))
        raise SystemExit(f"{out} holds another recipe (differs in {', '.join(diff)}): use another --out-dir, "
                         "or --fresh to start over there")  # fmt: skip
    return True


def merge_seeds(src: Path, out: Path, recipe: dict) -> bool:
    """Copy the ``seedN/`` folders and per-seed rows of ``src`` (same recipe) into ``out``; a seed
    already present in ``out`` keeps its own files. Returns whether anything was copied."""
    import shutil

    theirs = json.loads((src / "recipe.json").read_text()) if (src / "recipe.json").is_file() else None
    if theirs != recipe:
        raise SystemExit(f"--merge-from {src}: not the same recipe (recipe.json differs or is missing)")
    copied = False
    for seed_dir in sorted(src.glob("seed*")):
        if seed_dir.is_dir() and not (out / seed_dir.name).exists():
            shutil.copytree(seed_dir, out / seed_dir.name)
            print(f"{seed_dir} -> {out / seed_dir.name}", file=sys.stderr, flush=True)
            copied = True
    rows = {}
    for f in (src / "per_seed.json", out / "per_seed.json"):  # ours win
        if f.is_file():
            rows.update({r["seed"]: r for r in json.loads(f.read_text())})
    if rows:
        write_rows(out, rows)
    return copied or bool(rows)


def write_rows(out: Path, rows: dict[int, dict]) -> None:
    """``per_seed.json``: one row per seed, in seed order."""
    (out / "per_seed.json").write_text(json.dumps(sorted(rows.values(), key=lambda r: r["seed"]), indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="runs/synthetic_recipe")
    ap.add_argument("--teacher", default="default", help="teacher model/dir for create_teacher (default: bundled)")
    ap.add_argument("--teacher-random", action="store_true", help="random tiny teacher (smoke test only)")
    # 180 steps were enough for the 35.8-mIoU teacher, not for the 54.1 one (training/README.md)
    ap.add_argument("--pretrain-steps", type=int, default=360)
    ap.add_argument("--finetune-steps", type=int, default=60)
    ap.add_argument("--train-scenes", type=int, default=2, help="pre-training scenes (x4 key frames)")
    ap.add_argument("--val-scenes", type=int, default=6, help="evaluation scenes (x4 key frames)")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of training seeds")
    ap.add_argument("--points-per-ring", type=int, default=360)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="pre-training config override, e.g. --set optim.lr=0.3 --set augment=false")  # fmt: skip
    ap.add_argument("--skip", default="", help="comma list of stages to skip: s1,keyeq1,finetune,budget")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the plumbing in a few minutes")
    ap.add_argument("--fresh", action="store_true",
                    help="retrain everything (default: reuse the stages an earlier run of the same recipe "
                         "finished in --out-dir, so a killed run or one spread over days loses nothing)")  # fmt: skip
    ap.add_argument("--merge-from", action="append", default=[], metavar="DIR",
                    help="first copy the finished seeds of another --out-dir of the same recipe (e.g. a seed "
                         "run on another machine) into this one")  # fmt: skip
    args = ap.parse_args()
    if args.quick:
        args.pretrain_steps, args.finetune_steps, args.train_scenes, args.val_scenes = 4, 4, 1, 1
        args.points_per_ring, args.seeds = 180, "0,1"

    from clip2scene_training.config import EvaluateConfig, FinetuneConfig, PretrainConfig, load_config
    from clip2scene_training.evaluate import evaluate
    from clip2scene_training.finetune import train as finetune
    from clip2scene_training.pretrain import train as pretrain

    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    skip = set(filter(None, args.skip.split(",")))
    sim = {"lidar.points_per_ring": args.points_per_ring}
    if args.quick:
        sim.update({"cameras.width": 192, "cameras.height": 112})
    teacher = {"model": args.teacher, "vocabulary": "synthetic"}
    if args.teacher_random:
        teacher = {"model": "c2s-tiny-vit-p16", "random_init": True, "vocabulary": "synthetic"}
    data = lambda split, scenes, sweeps, **kw: {  # noqa: E731
        "kind": "synthetic",
        "options": {
            "split": split,
            "num_scenes": scenes,
            "key_frames_per_scene": 4,
            "key_every": 5,
            "num_sweeps": sweeps,
            "sim_config": sim,
            **kw,
        },
    }
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    # what makes two runs the same recipe (seeds and threads may differ)
    recipe = {k: v for k, v in vars(args).items() if k not in ("seeds", "threads", "out_dir", "fresh", "merge_from")}
    reuse = check_reusable(out, recipe, fresh=args.fresh)
    for src in args.merge_from:
        reuse = merge_seeds(Path(src), out, recipe) or reuse
    timings: dict[str, float] = {}
    per_seed: list[dict] = []
    seed_seconds: list[float] = []

    def timed(name, fn, *a, **kw):
        t = time.time()
        r = fn(*a, **kw)
        timings[name] = round(time.time() - t, 1)
        print(
            f"[{name}] {timings[name]} s: {json.dumps({k: v for k, v in r.items() if 'iou_' not in k})[:300]}",
            file=sys.stderr,
            flush=True,
        )
        return r

    def run_pretrain(seed: int, name: str, sweeps: int, extra: dict) -> dict:
        if reuse and (out / f"seed{seed}" / name / "student" / "model.json").is_file():
            print(f"[seed{seed}_{name}] reused (finished earlier)", file=sys.stderr, flush=True)
            return {}
        base = load_config(PretrainConfig, "pretrain_synthetic", args.set or None)
        cfg = _asdict(base)
        cfg.update({
            "max_steps": args.pretrain_steps, "num_threads": args.threads, "checkpoint_every": 1000,
            "teacher": teacher, "progress": True, "seed": seed, "out_dir": str(out / f"seed{seed}" / name),
            "data": data("train", args.train_scenes, sweeps), "targets": {"cache_dir": str(out / "target_cache")},
        })  # fmt: skip
        cfg["loss"] = {**cfg["loss"], **extra}
        timed(f"seed{seed}_{name}", pretrain, load_config(PretrainConfig, cfg), resume="never")
        return cfg

    def run_eval(seed: int, name: str, checkpoint: Path, with_teacher: bool) -> dict:
        done = out / f"seed{seed}" / f"eval_{name}" / "summary.json"
        if reuse and done.is_file() and os.path.getmtime(done) > os.path.getmtime(checkpoint / "model.json"):
            print(f"[seed{seed}_evaluate_{name}] reused (finished earlier)", file=sys.stderr, flush=True)
            return json.loads(done.read_text())
        ev = load_config(EvaluateConfig, {
            "checkpoint": str(checkpoint), "out_dir": str(out / f"seed{seed}" / f"eval_{name}"),
            "data": data("val", args.val_scenes, 1), "teacher": teacher if with_teacher else None,
            "num_threads": args.threads, "progress": False})  # fmt: skip
        return timed(f"seed{seed}_evaluate_{name}", evaluate, ev)

    def run_finetune(seed: int, name: str, init: str | None, steps: int) -> dict:
        student = out / f"seed{seed}" / f"finetune_{name}" / "student"
        meta = json.loads((student / "model.json").read_text()) if (student / "model.json").is_file() else {}
        if reuse and "labelled_samples" in meta.get("extra", {}):
            print(f"[seed{seed}_finetune_{name}] reused (finished earlier)", file=sys.stderr, flush=True)
            ev = run_eval(seed, f"ft_{name}", student, False)
            return {**ev, "labelled_frames": meta["extra"]["labelled_samples"]}
        cfg = load_config(FinetuneConfig, {
            "out_dir": str(out / f"seed{seed}" / f"finetune_{name}"), "init": init, "label_fraction": 0.01,
            "max_steps": steps, "num_threads": args.threads, "checkpoint_every": 1000, "seed": seed,
            "data": data("train", 25, 1, render_cameras=False), "loader": {"workers": 0},
            "optim": {"lr": 0.02, "head_lr": 0.2}})  # fmt: skip
        ft = timed(f"seed{seed}_finetune_{name}", finetune, cfg, resume="never")
        ev = run_eval(seed, f"ft_{name}", out / f"seed{seed}" / f"finetune_{name}" / "student", False)
        return {**ev, "labelled_frames": ft["labelled_samples"]}

    rows_file = out / "per_seed.json"
    done_rows = {r["seed"]: r for r in json.loads(rows_file.read_text())} if reuse and rows_file.is_file() else {}
    for seed in seeds:
        if seed in done_rows:
            print(f"[seed{seed}] reused (finished earlier)", file=sys.stderr, flush=True)
            per_seed.append(done_rows[seed])
            seed_seconds.append(done_rows[seed].get("seconds"))
            continue
        t_seed = time.time()
        row: dict = {"seed": seed}
        run_pretrain(seed, "pretrain_s3", 3, {})
        s3 = run_eval(seed, "s3", out / f"seed{seed}" / "pretrain_s3" / "student", True)
        row.update({
            "teacher_miou_seen": s3.get("miou_teacher_camera_seen"), "student_miou_seen": s3.get("miou_camera_seen"),
            "student_miou_unseen": s3.get("miou_camera_unseen"), "student_miou_all": s3.get("miou_all"),
            "student_miou_unseen_same_classes": same_class_miou(s3),
        })  # fmt: skip
        if "keyeq1" not in skip:
            run_pretrain(seed, "pretrain_s3_keyeq1", 3, {"semantic_on_sweeps": False})
            k = run_eval(seed, "s3_keyeq1", out / f"seed{seed}" / "pretrain_s3_keyeq1" / "student", False)
            row["student_keyeq1_miou_seen"] = k.get("miou_camera_seen")
            row["student_keyeq1_miou_all"] = k.get("miou_all")
        if "s1" not in skip:
            run_pretrain(seed, "pretrain_s1", 1, {})
            s1 = run_eval(seed, "s1", out / f"seed{seed}" / "pretrain_s1" / "student", False)
            row["student_1sweep_miou_seen"] = s1.get("miou_camera_seen")
            row["student_1sweep_miou_all"] = s1.get("miou_all")
        if "finetune" not in skip:
            pre = run_finetune(seed, "from_pretrain", str(out / f"seed{seed}" / "pretrain_s3" / "student"),
                               args.finetune_steps)  # fmt: skip
            scratch = run_finetune(seed, "from_scratch", None, args.finetune_steps)
            row["finetune_1pct_pretrained"] = pre.get("miou_all")
            row["finetune_1pct_scratch"] = scratch.get("miou_all")
            row["labelled_frames_1pct"] = scratch["labelled_frames"]
            if "budget" not in skip:
                budget = run_finetune(seed, "from_scratch_budget", None, args.pretrain_steps + args.finetune_steps)
                row["finetune_1pct_scratch_same_budget"] = budget.get("miou_all")
        seed_seconds.append(round(time.time() - t_seed, 1))
        row["seconds"] = seed_seconds[-1]
        per_seed.append(row)
        write_rows(out, {**done_rows, **{r["seed"]: r for r in per_seed}})

    # -- table -----------------------------------------------------------------------------------
    stats = {key: mean_std([r.get(key) for r in per_seed]) for key, _ in METRICS}
    print(f"\n{'synthetic val split (' + str(4 * args.val_scenes) + ' frames), ' + str(len(seeds)) + ' seeds':<52}"
          f" {'mIoU mean +- std':>18}")  # fmt: skip
    for key, label in METRICS:
        st = stats[key]
        cell = "-" if st["mean"] is None else f"{st['mean']:6.1f} +- {st['std']:4.1f}"
        print(f"{label:<52} {cell:>18}")
    ratio = [
        r["student_miou_seen"] / r["teacher_miou_seen"]
        for r in per_seed
        if r.get("student_miou_seen") is not None and r.get("teacher_miou_seen")
    ]
    gain = [
        r["finetune_1pct_pretrained"] - r["finetune_1pct_scratch"]
        for r in per_seed
        if r.get("finetune_1pct_pretrained") is not None and r.get("finetune_1pct_scratch") is not None
    ]
    gain_budget = [
        r["finetune_1pct_pretrained"] - r["finetune_1pct_scratch_same_budget"]
        for r in per_seed
        if r.get("finetune_1pct_pretrained") is not None and r.get("finetune_1pct_scratch_same_budget") is not None
    ]
    summary = {
        "benchmark": "synthetic_recipe",
        "seeds": seeds,
        "val_frames": 4 * args.val_scenes,
        **{key: stats[key] for key, _ in METRICS},
        "student_over_teacher_seen": mean_std(ratio),
        "pretrain_gain_1pct": mean_std(gain),
        "pretrain_gain_1pct_same_budget": mean_std(gain_budget),
        "labelled_frames_1pct": per_seed[0].get("labelled_frames_1pct") if per_seed else None,
        "seconds_per_seed": seed_seconds,
        "seconds": timings,
        "total_seconds": round(sum(seed_seconds), 1),
        "teacher": teacher,
        "steps": {"pretrain": args.pretrain_steps, "finetune": args.finetune_steps},
        "pretrain_overrides": args.set,
        "threads": args.threads,
        "load_average": os.getloadavg()[0],
    }
    (out / "summary.json").write_text(json.dumps({**summary, "per_seed": per_seed}, indent=1))
    print(json.dumps(summary))
    return 0


def _asdict(cfg):
    import dataclasses

    return dataclasses.asdict(cfg)


if __name__ == "__main__":
    sys.exit(main())
