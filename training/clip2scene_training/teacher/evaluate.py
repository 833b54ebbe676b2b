"""``clip2scene evaluate teacher``: 2D pixel mIoU of a teacher on held-out synthetic renders."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HELP = "pixel mIoU and per-class IoU of a CLIP teacher on held-out synthetic camera images (JSON + markdown)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher",
        default="default",
        help="teacher model: 'default', a directory, "
        "a JSON config or an open_clip architecture such as ViT-B-16",
    )
    parser.add_argument("--weights", default=None, help="local weights file for an open_clip architecture")
    parser.add_argument("--vocab", default="synthetic", help="vocabulary name or YAML (config/vocab)")
    parser.add_argument(
        "--val-seeds", default=None, help="scene seeds 'a:b' or 'a,b,c' (default: teacher val)"
    )
    parser.add_argument("--data-dir", default=None, help="where rendered splits are cached")
    parser.add_argument(
        "--frames", default=None, help="frame indices per scene, e.g. '0,40' (default 0,40,80,120)"
    )
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N images (0 = all)")
    parser.add_argument(
        "--out", default="outputs/teacher_eval", help="output directory for JSON/markdown/plot"
    )
    parser.add_argument("--key-smoothing", type=float, default=None, help="MaskCLIP key-smoothing threshold")
    parser.add_argument(
        "--prompt-denoising", type=float, default=None, help="MaskCLIP prompt-denoising threshold"
    )
    for flag, what in (
        ("tile-overlap", "average a second tile grid shifted by half a tile"),
        ("flip-average", "average with the mirrored image"),
    ):
        parser.add_argument(
            f"--{flag}", action=argparse.BooleanOptionalAction, default=None, help=f"{what} (default: the teacher's)"
        )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")


def confusion(pred: np.ndarray, gt: np.ndarray, num_ids: int, ignore: int = 0) -> np.ndarray:
    """[num_ids, num_ids] counts (rows = ground truth) over pixels whose gt is not ``ignore``."""
    keep = gt != ignore
    idx = gt[keep].astype(np.int64) * num_ids + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_ids * num_ids).reshape(num_ids, num_ids)


def iou_from_confusion(conf: np.ndarray, ids: list[int]) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    for i in ids:
        tp = conf[i, i]
        denom = conf[i, :].sum() + conf[:, i].sum() - tp
        out[i] = float(tp / denom) if conf[i, :].sum() > 0 else None  # absent class: not scored
    return out


def evaluate_teacher(teacher, images: np.ndarray, labels: np.ndarray, vocab, batch_size: int = 8) -> dict:
    """Per-class IoU / mIoU (percent) of ``teacher.predict`` against label images (0 = ignore)."""
    ids = vocab.ids
    num = max(ids) + 1
    conf = np.zeros((num, num), np.int64)
    start = time.perf_counter()
    for s in range(0, len(images), batch_size):
        pred = teacher.predict(images[s : s + batch_size], vocab).cpu().numpy()
        conf += confusion(pred, labels[s : s + batch_size], num, vocab.ignore_index)
    seconds = time.perf_counter() - start
    ious = iou_from_confusion(conf, ids)
    scored = [v for v in ious.values() if v is not None]
    names = dict(zip(ids, vocab.class_names, strict=True))
    valid = conf[1:, :].sum()
    return {
        "miou": 100.0 * float(np.mean(scored)) if scored else 0.0,
        "pixel_accuracy": 100.0 * float(np.trace(conf[1:, 1:]) / max(valid, 1)),
        "per_class_iou": {names[i]: (None if v is None else 100.0 * v) for i, v in ious.items()},
        "num_images": int(len(images)),
        "image_size": list(images.shape[1:3]),
        "seconds": seconds,
        "seconds_per_image": seconds / max(len(images), 1),
    }


def markdown(metrics: dict, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"- mIoU: **{metrics['miou']:.1f}**",
        f"- pixel accuracy: {metrics['pixel_accuracy']:.1f}",
        f"- images: {metrics['num_images']} ({metrics['image_size'][0]}x{metrics['image_size'][1]}), "
        f"{metrics['seconds_per_image']:.2f} s/image",
        "",
        "| class | IoU |",
        "|---|---|",
    ]
    for name, v in metrics["per_class_iou"].items():
        lines.append(f"| {name} | {'absent' if v is None else f'{v:.1f}'} |")
    return "\n".join(lines) + "\n"


def plot(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics["per_class_iou"])
    vals = [v or 0.0 for v in metrics["per_class_iou"].values()]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.bar(names, vals, color="tab:blue")
    ax.axhline(metrics["miou"], color="tab:red", ls="--", label=f"mIoU {metrics['miou']:.1f}")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", rotation=60)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from clip2scene_ros.teacher import create_teacher, load_vocabulary

    from .data import FRAMES_PER_SEED, VAL_SEEDS, parse_seeds, render_split

    torch.set_num_threads(args.threads)
    opts = {}
    if args.key_smoothing is not None:
        opts["key_smoothing"] = args.key_smoothing
    if args.prompt_denoising is not None:
        opts["prompt_denoising"] = args.prompt_denoising
    for name in ("tile_overlap", "flip_average"):
        if getattr(args, name, None) is not None:
            opts[name] = getattr(args, name)
    teacher = create_teacher(args.teacher, args.weights, **opts)
    vocab = load_vocabulary(args.vocab)
    seeds = parse_seeds(args.val_seeds) if args.val_seeds else VAL_SEEDS
    frames = (
        tuple(int(f) for f in args.frames.split(",")) if getattr(args, "frames", None) else FRAMES_PER_SEED
    )
    split = render_split("val", seeds, frames=frames, data_dir=args.data_dir)
    images, labels = split.images, split.labels
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    metrics = evaluate_teacher(teacher, images, labels, vocab)
    metrics.update(
        {
            "teacher": str(args.teacher),
            "model_id": teacher.model_id,
            "vocab": vocab.name,
            "seeds": [int(s) for s in seeds],
            "teacher_config": teacher.config.__dict__,
        }
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    (out / "metrics.md").write_text(markdown(metrics, f"Teacher {args.teacher} on synthetic val"))
    plot(metrics, out / "per_class_iou.png")
    print(markdown(metrics, f"Teacher {args.teacher} on synthetic val"))
    print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}, {out / 'per_class_iou.png'}")
    return 0
