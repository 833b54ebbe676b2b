"""``clip2scene evaluate student``: mIoU of a student on a labelled dataset.

Annotation-free (pre-trained) checkpoints predict ``argmax_c cos(global head, text_c)`` over the
vocabulary; fine-tuned checkpoints use their classifier. Reports all points, camera-seen and
camera-unseen points, and optionally the teacher projected onto the points it sees. Writes
per-class IoU (markdown + PNG bar chart), a confusion-matrix PNG and ``summary.json``; the JSON
summary is the last line printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from clip2scene_ros.evaluation.metrics import confusion_matrix, iou_from_confusion
from clip2scene_training.config import EvaluateConfig, TeacherSpec, config_to_dict, load_config

HELP = "evaluate a student: annotation-free (text) or fine-tuned mIoU, per-class IoU, confusion matrix"

__all__ = [
    "confusion_matrix",
    "iou_from_confusion",
    "ClassMap",
    "load_class_map",
    "load_student",
    "Student",
    "evaluate",
    "write_report",
]


# --- class maps (cross-dataset) ---------------------------------------------------------------
class ClassMap:
    """Maps the model's class ids (1..C_src) to the dataset's ids (0..C_dst)."""

    def __init__(self, lut: np.ndarray, target_names: list[str]):
        self.lut = lut
        self.target_names = target_names

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.lut[np.clip(ids, 0, len(self.lut) - 1)]


def load_class_map(path_or_name: str, source_names: list[str], target_names: list[str]) -> ClassMap:
    """YAML ``map`` of source id -> target id (config/class_maps/*.yaml) or class name -> class name."""
    p = Path(path_or_name)
    if not p.is_file():
        from clip2scene_ros.resources import config_path

        p = config_path("class_maps", f"{path_or_name}.yaml")
    if not p.is_file():
        raise FileNotFoundError(
            f"class map {path_or_name!r} not found; give a YAML path or a name in config/class_maps"
        )
    data = yaml.safe_load(p.read_text())
    lut = np.zeros(len(source_names) + 1, dtype=np.int64)
    for k, v in (data.get("map") or {}).items():
        src = k if isinstance(k, int) else source_names.index(k) + 1
        dst = v if isinstance(v, int) or v is None else target_names.index(v) + 1
        if src < len(lut):
            lut[src] = dst or 0
    names = list(data.get("target_names", ["ignore", *target_names]))[1:]
    if len(names) != len(target_names):
        raise ValueError(f"{p}: maps to {len(names)} classes but the dataset has {len(target_names)}")
    return ClassMap(lut, target_names)


# --- students -----------------------------------------------------------------------------------
class Student:
    """A checkpoint that turns points into class ids of its own label space (1..C)."""

    def __init__(self, model, extra: dict, text: torch.Tensor | None, class_names: list[str], voxel_size: float):
        self.model = model.eval()
        self.extra = extra
        self.text = text
        self.class_names = class_names
        self.voxel_size = voxel_size
        self.finetuned = "seg" in model.config.heads

    @torch.no_grad()
    def predict(self, points: np.ndarray) -> np.ndarray:
        from clip2scene_ros.models.inputs import encode_points

        out = encode_points(self.model, [torch.from_numpy(np.ascontiguousarray(points))], self.voxel_size)[0]
        if self.finetuned:
            return out["seg"].argmax(1).numpy() + 1
        scores = F.normalize(out["global"].float(), dim=-1) @ self.text.T
        return scores.argmax(1).numpy() + 1


def load_student(
    checkpoint: str | Path,
    vocabulary: str | None = None,
    teacher: TeacherSpec | None = None,
    voxel_size: float | None = None,
) -> Student:
    from safetensors.torch import load_file

    from clip2scene_ros.models import load_checkpoint

    model, config, extra = load_checkpoint(checkpoint)
    vs = voxel_size or extra.get("voxel_size") or config.voxel_size
    if "seg" in config.heads:
        return Student(model, extra, None, list(extra["class_names"]), vs)
    if vocabulary is None or vocabulary == extra.get("vocabulary"):
        text = load_file(str(Path(checkpoint) / "text_embeddings.safetensors"))["text"].float()
        return Student(model, extra, text, list(extra["class_names"]), vs)
    from clip2scene_ros.teacher import create_teacher, load_vocabulary

    spec = teacher or TeacherSpec(**extra["teacher"])
    t = create_teacher(spec.model, spec.weights, random_init=spec.random_init, **spec.options)
    vocab = load_vocabulary(vocabulary)
    return Student(model, extra, t.encode_vocabulary(vocab).float(), list(vocab.class_names), vs)


# --- evaluation ---------------------------------------------------------------------------------
def evaluate(cfg: EvaluateConfig) -> dict:
    from clip2scene_ros.datasets import create_dataset
    from clip2scene_training.targets import compute_targets

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    from clip2scene_ros.models.inputs import InputSpec

    options = dict(cfg.data.options)
    if InputSpec.from_checkpoint(cfg.checkpoint).frame.name == "base_link":  # samples in the student's frame
        options.setdefault("frame", "base_link")
    dataset = create_dataset(cfg.data.kind, cfg.data.pairing, **options)
    student = load_student(cfg.checkpoint, cfg.vocabulary, cfg.teacher, cfg.voxel_size)
    names = list(dataset.class_names)
    if cfg.class_map:
        cmap = load_class_map(cfg.class_map, student.class_names, names)
    elif [n.lower() for n in student.class_names] == [n.lower() for n in names]:
        cmap = ClassMap(np.arange(len(names) + 1), names)
    else:
        raise ValueError(
            f"the model predicts {student.class_names} but the dataset is labelled {names}; "
            "pass class_map (a YAML in config/class_maps, e.g. synthetic_to_nuscenes16)"
        )
    teacher = text = None
    if cfg.teacher is not None:
        from clip2scene_ros.teacher import create_teacher, load_vocabulary

        s = cfg.teacher
        teacher = create_teacher(s.model, s.weights, random_init=s.random_init, **s.options)
        text = teacher.encode_vocabulary(load_vocabulary(s.vocabulary)).float()
    C = len(names)
    conf = {k: np.zeros((C + 1, C + 1), np.int64) for k in ("all", "camera_seen", "camera_unseen")}
    if teacher is not None:
        conf["teacher_camera_seen"] = np.zeros((C + 1, C + 1), np.int64)
    n = len(dataset) if cfg.max_samples is None else min(cfg.max_samples, len(dataset))
    iterator = range(n)
    if cfg.progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="evaluate", unit="sample", file=sys.stderr)
    t0 = time.time()
    for i in iterator:
        s = dataset[i]
        if s.labels is None:
            raise ValueError(f"sample {s.token} has no labels; evaluate on a labelled split")
        pred = cmap(student.predict(s.points))
        seen = s.seen_mask()
        conf["all"] += confusion_matrix(pred, s.labels, C)
        conf["camera_seen"] += confusion_matrix(pred[seen], s.labels[seen], C)
        conf["camera_unseen"] += confusion_matrix(pred[~seen], s.labels[~seen], C)
        if teacher is not None:
            tg = compute_targets(teacher, text, s)
            idx = tg.sweeps[0].point_index.numpy()
            tpred = cmap(tg.sweeps[0].pseudo.numpy() + 1)
            conf["teacher_camera_seen"] += confusion_matrix(tpred, s.labels[idx], C)
    result = {
        "stage": "evaluate",
        "checkpoint": str(cfg.checkpoint),
        "dataset": cfg.data.kind,
        "samples": n,
        "mode": "finetuned" if student.finetuned else "annotation_free",
        "classes": names,
        "seconds": round(time.time() - t0, 2),
    }
    for k, m in conf.items():
        iou, miou = iou_from_confusion(m)
        result[f"miou_{k}"] = round(miou, 2)
        result[f"iou_{k}"] = [None if np.isnan(v) else round(float(v) * 100, 2) for v in iou]
        result[f"points_{k}"] = int(m[1:].sum())
    result["miou"] = result["miou_all"]
    write_report(Path(cfg.out_dir), result, conf)
    return result


def write_report(out_dir: Path, result: dict, conf: dict[str, np.ndarray]) -> None:
    """per_class_iou.md, iou_bar.png, confusion.png, summary.json in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = result["classes"]
    keys = [k for k in conf]
    lines = ["| class | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for ci, name in enumerate(names):
        cells = [result[f"iou_{k}"][ci] for k in keys]
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in cells) + " |")
    lines.append("| **mIoU** | " + " | ".join(f"**{result[f'miou_{k}']:.1f}**" for k in keys) + " |")
    (out_dir / "per_class_iou.md").write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(names)), 4))
    width = 0.8 / len(keys)
    for j, k in enumerate(keys):
        vals = [0 if v is None else v for v in result[f"iou_{k}"]]
        ax.bar(np.arange(len(names)) + j * width, vals, width, label=f"{k} ({result[f'miou_{k}']:.1f})")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.set_title(f"per-class IoU ({result['mode']})")
    fig.tight_layout()
    fig.savefig(out_dir / "iou_bar.png", dpi=110)
    plt.close(fig)

    m = conf["all"][1:, :].astype(np.float64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names)), max(5, 0.45 * len(names))))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names) + 1), ["(none)", *names], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion (row-normalised, all points)")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=110)
    plt.close(fig)
    (out_dir / "summary.json").write_text(json.dumps(result, indent=1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML file or shipped name (e.g. evaluate_synthetic)")
    parser.add_argument("--checkpoint", help="student checkpoint directory (overrides checkpoint)")
    parser.add_argument("--out-dir", help="report directory (overrides out_dir)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.checkpoint:
        overrides.append(f"checkpoint={args.checkpoint}")
    if args.out_dir:
        overrides.append(f"out_dir={args.out_dir}")
    cfg = load_config(EvaluateConfig, args.config or "evaluate_synthetic", overrides)
    result = evaluate(cfg)
    print(Path(cfg.out_dir, "per_class_iou.md").read_text())
    short = {k: v for k, v in result.items() if not k.startswith("iou_")}
    short["config"] = {"data": config_to_dict(cfg.data), "class_map": cfg.class_map}
    short["report"] = str(cfg.out_dir)
    print(json.dumps(short), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clip2scene evaluate student", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
