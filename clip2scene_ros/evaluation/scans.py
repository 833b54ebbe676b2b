"""``clip2scene evaluate scans PATH``: a student's mIoU on labelled real LiDAR scans.

Two layouts are read:

- ``points/NAME.npy`` (float32 [P, 3] x y z or [P, 4] with intensity) + ``labels/NAME.npy``
  (SemanticKITTI train ids 0..19, 0 = ignore);
- SemanticKITTI's own ``sequences/XX/velodyne/NNNNNN.bin`` (float32 x y z intensity) +
  ``sequences/XX/labels/NNNNNN.label`` (uint32, raw id in the low 16 bits), raw ids mapped to the
  19 classes with the official learning map (``config/class_maps/semantickitti_raw_to_semantickitti19``).

Scans are in the KITTI Velodyne frame (x forward, y left, z up, ~1.73 m above the road). They are
brought into the frame the checkpoint declares (``frame`` in ``model.json``'s extra; checkpoints
without one were trained in the nuScenes LIDAR_TOP frame of the simulator) before the forward.
The model's vocabulary maps to the 19 classes through ``config/class_maps``; mIoU is over the
classes present in the ground truth that some vocabulary class maps to. The same figures are also
given per range from the sensor (0-10, 10-20, 20-40, >= 40 m): sim-to-real gaps tend to differ
between the dense near field and the sparse far rings.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HELP = "mIoU of a student on labelled real LiDAR scans (points/labels .npy or SemanticKITTI sequences/)"
GT_TAXONOMY = "semantickitti19"
KITTI_MOUNT_HEIGHT = 1.73  # m, Velodyne above the road (KITTI set-up; measured road median 1.72 m)
DEFAULT_STUDENT = Path(__file__).resolve().parent.parent / "assets" / "student"
LEGACY_FRAME = {"name": "lidar_top", "mount": [0.94, 0.0, 1.84], "yaw_deg": 90.0}


@dataclass
class Scan:
    name: str
    points: np.ndarray  # float32 [P, 3 or 4] in the KITTI Velodyne frame
    labels: np.ndarray  # int64 [P] SemanticKITTI train ids (0 = ignore)


class ScanLayoutError(ValueError):
    pass


def _check(name: str, points: np.ndarray, labels: np.ndarray) -> Scan:
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ScanLayoutError(f"{name}: points must be [P, 3] or [P, 4], got shape {points.shape}")
    if len(points) != len(labels):
        raise ScanLayoutError(f"{name}: {len(points)} points but {len(labels)} labels")
    return Scan(name, np.ascontiguousarray(points[:, :4], dtype=np.float32), labels)


def find_layout(path: Path) -> str:
    """``npy`` (points/ + labels/), ``semantickitti`` (sequences/XX/velodyne), or an error."""
    if (path / "points").is_dir() and (path / "labels").is_dir():
        return "npy"
    if _sequence_dirs(path):
        return "semantickitti"
    raise ScanLayoutError(
        f"{path}: no scans found; expected points/NAME.npy + labels/NAME.npy, or SemanticKITTI "
        "sequences/XX/velodyne/*.bin + sequences/XX/labels/*.label"
    )


def _sequence_dirs(path: Path) -> list[Path]:
    if (path / "velodyne").is_dir():
        return [path]
    root = path / "sequences" if (path / "sequences").is_dir() else path
    return sorted(d for d in root.iterdir() if d.is_dir() and (d / "velodyne").is_dir()) if root.is_dir() else []


def iter_scans(path: str | Path, sequences: list[str] | None = None, every: int = 1, limit: int = 0) -> Iterator[Scan]:
    """Labelled scans under ``path`` in a fixed order (sorted names), every ``every``-th, at most ``limit``."""
    from clip2scene_ros.sim.taxonomy import map_labels

    path = Path(path)
    if not path.exists():
        raise ScanLayoutError(f"{path} does not exist")
    layout = find_layout(path)
    items: list[tuple[str, Path, Path]] = []
    if layout == "npy":
        for p in sorted((path / "points").glob("*.npy")):
            lab = path / "labels" / p.name
            if not lab.is_file():
                log.warning("%s has no labels/%s: skipped", p, p.name)
                continue
            items.append((p.stem, p, lab))
    else:
        for seq in _sequence_dirs(path):
            if sequences and seq.name not in sequences:
                continue
            for p in sorted((seq / "velodyne").glob("*.bin")):
                lab = seq / "labels" / f"{p.stem}.label"
                if not lab.is_file():
                    log.warning("%s has no labels/%s.label: skipped", p, p.stem)
                    continue
                items.append((f"{seq.name}/{p.stem}", p, lab))
    items = items[:: max(1, every)]
    if limit:
        items = items[:limit]
    if not items:
        raise ScanLayoutError(f"{path}: no labelled scans ({layout} layout)")
    for name, p, lab in items:
        if layout == "npy":
            yield _check(name, np.load(p), np.load(lab))
        else:
            raw = np.fromfile(p, dtype=np.float32)
            if raw.size % 4:
                raise ScanLayoutError(f"{p}: size {raw.size * 4} bytes is not a multiple of 16 (x y z intensity)")
            sem = np.fromfile(lab, dtype=np.uint32) & 0xFFFF
            yield _check(
                name, raw.reshape(-1, 4), map_labels(sem.astype(np.int64), "semantickitti_raw_to_semantickitti19")
            )


# ---- frames ----------------------------------------------------------------------------------


def model_frame(extra: dict) -> dict:
    """The input frame a checkpoint was trained in (``extra['frame']``; older ones: the sim's LIDAR_TOP)."""
    return dict(extra.get("frame") or LEGACY_FRAME)


def kitti_to_model_frame(points: np.ndarray, frame: dict, mount_height: float = KITTI_MOUNT_HEIGHT) -> np.ndarray:
    """KITTI Velodyne points (x forward, y left, ``mount_height`` above the road) -> the model's
    input frame (:class:`~clip2scene_ros.geometry.frames.ModelFrame`); columns beyond xyz are kept."""
    from clip2scene_ros.geometry.frames import ModelFrame

    return ModelFrame.from_dict(frame).to_model(points, (0.0, 0.0, mount_height, 0.0, 0.0, 0.0))


# ---- evaluation ------------------------------------------------------------------------------


# horizontal distance from the sensor (m): where sim-to-real gaps hide (dense near field vs sparse rings)
RANGE_BINS = (0.0, 10.0, 20.0, 40.0, float("inf"))


def _range_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g} m" if np.isfinite(hi) else f">= {lo:g} m"


def _mapped_iou(confusion, mapped: np.ndarray) -> dict[str, float]:
    """Per-class IoU (0-100) over the classes present in ``confusion``'s ground truth and mapped."""
    iou = confusion.iou()
    present = confusion.matrix[1:].sum(axis=1) > 0
    names = confusion.class_names
    return {names[i]: round(float(iou[i]) * 100, 2) for i in range(len(names)) if present[i] and mapped[i]}


@dataclass
class ScanEvaluation:
    confusion: object  # evaluation.metrics.ConfusionMatrix (19 classes)
    mapped: np.ndarray  # bool [19]: some vocabulary class maps to it
    scans: int
    points: int
    seconds: float
    bev: list[Path]
    by_range: dict[str, object] | None = None  # range bin name -> ConfusionMatrix of its points

    def per_class_iou(self) -> dict[str, float]:
        return _mapped_iou(self.confusion, self.mapped)

    def miou(self) -> float:
        v = list(self.per_class_iou().values())
        return round(float(np.mean(v)), 2) if v else float("nan")

    def range_summary(self) -> dict[str, dict]:
        """Per range bin: labelled points, mIoU and per-class IoU over the classes present there."""
        out = {}
        for name, conf in (self.by_range or {}).items():
            iou = _mapped_iou(conf, self.mapped)
            labelled = int(conf.matrix[1:].sum())
            miou = round(float(np.mean(list(iou.values()))), 2) if iou else None
            out[name] = {"points": labelled, "miou": miou, "per_class_iou": iou}
        return out

    def confused_with(self, top: int = 2, min_share: float = 1.0) -> dict[str, dict[str, float]]:
        """Per ground-truth class present: where its points went most, besides itself (% of them)."""
        m = self.confusion.matrix[1:, :]
        names = ["(none)", *self.confusion.class_names]
        out = {}
        for i, row in enumerate(m):
            total = row.sum()
            if not total:
                continue
            shares = [(names[c], round(float(row[c]) / total * 100, 1)) for c in np.argsort(-row) if c != i + 1]
            out[names[i + 1]] = {n: v for n, v in shares[:top] if v >= min_share}
        return out

    def summary(self) -> dict:
        iou = self.confusion.iou()
        present = self.confusion.matrix[1:].sum(axis=1) > 0
        names = self.confusion.class_names
        unmapped = {
            names[i]: int(self.confusion.matrix[1 + i].sum())
            for i in range(len(names))
            if present[i] and not self.mapped[i]
        }
        return {
            "miou": self.miou(),
            "per_class_iou": self.per_class_iou(),
            "miou_all_present": round(float(np.nanmean(np.where(present, iou, np.nan))) * 100, 2),
            "accuracy": round(self.confusion.accuracy() * 100, 2),
            "unmapped_classes_present": unmapped,
            "by_range": self.range_summary(),
            "confused_with": self.confused_with(),
            "scans": self.scans,
            "points": self.points,
            "seconds": round(self.seconds, 2),
        }


def evaluate_scans(
    segmenter,
    scans: Iterator[Scan] | list[Scan],
    frame: dict,
    *,
    out_dir: Path | None = None,
    bev_scans: int = 1,
    class_map: str | None = None,
    mount_height: float = KITTI_MOUNT_HEIGHT,
) -> ScanEvaluation:
    """Run ``segmenter`` on each scan (brought into ``frame``) and accumulate a 19-class confusion."""
    from clip2scene_ros.evaluation.metrics import ConfusionMatrix, gt_class_names, resolve_label_mapping

    vocab = segmenter.vocabulary
    classes = list(zip(vocab.ids, vocab.class_names, strict=True))
    mapping = resolve_label_mapping(vocab.name, classes, GT_TAXONOMY, class_map)
    names = gt_class_names(GT_TAXONOMY)
    conf = ConfusionMatrix(names)
    by_range = {_range_name(lo, hi): ConfusionMatrix(names) for lo, hi in zip(RANGE_BINS[:-1], RANGE_BINS[1:])}
    mapped = np.zeros(len(names), dtype=bool)
    targets = mapping.lut[np.asarray(segmenter.vocabulary.ids)]
    mapped[targets[targets > 0] - 1] = True
    fields = tuple(segmenter.feature_fields)
    warned: set[str] = set()
    bev: list[Path] = []
    n_scans = n_points = 0
    t0 = time.perf_counter()
    for scan in scans:
        pts = kitti_to_model_frame(scan.points, frame, mount_height)
        cols = [pts[:, :3]]
        for f in fields:
            if f == "intensity" and pts.shape[1] > 3:
                cols.append(pts[:, 3:4])
            else:
                if f not in warned:
                    log.warning(
                        "the scans have no '%s' field but the model reads it: filled with 0 "
                        "(a model without point features needs none)",
                        f,
                    )
                    warned.add(f)
                cols.append(np.zeros((len(pts), 1), np.float32))
        result = segmenter.segment(np.concatenate(cols, axis=1))
        pred = mapping(result.labels)
        conf.update(pred, scan.labels)
        dist = np.linalg.norm(scan.points[:, :2], axis=1)  # from the sensor, in the scan's own frame
        for (lo, hi), part in zip(zip(RANGE_BINS[:-1], RANGE_BINS[1:]), by_range.values()):
            sel = (dist >= lo) & (dist < hi)
            part.update(pred[sel], scan.labels[sel])
        if out_dir is not None and len(bev) < bev_scans:
            bev.append(write_bev(scan, pred, names, out_dir / f"bev_{scan.name.replace('/', '_')}.png"))
        n_scans += 1
        n_points += len(pts)
    return ScanEvaluation(conf, mapped, n_scans, n_points, time.perf_counter() - t0, bev, by_range)


def write_bev(scan: Scan, pred19: np.ndarray, names: list[str], path: Path, extent: float = 40.0) -> Path:
    """Prediction (mapped to the 19 classes) beside the ground truth, top-down in the scan's frame."""
    from clip2scene_ros.evaluation.report import BevFrame, plot_bev

    path.parent.mkdir(parents=True, exist_ok=True)
    id_names = {i + 1: n for i, n in enumerate(names)}
    frame = BevFrame(scan.points[:, :3], pred19, id_names, f"prediction ({scan.name})", scan.labels, id_names)
    return plot_bev(frame, path, extent)


def format_table(summary: dict) -> str:
    confused = summary.get("confused_with", {})
    lines = ["| class | IoU | mostly predicted instead |", "|---|---|---|"]
    for k, v in summary["per_class_iou"].items():
        worst = ", ".join(f"{n} {p:.0f} %" for n, p in confused.get(k, {}).items()) or "-"
        lines.append(f"| {k} | {v:.1f} | {worst} |")
    lines.append(f"| **mIoU** ({len(summary['per_class_iou'])} classes) | **{summary['miou']:.1f}** | |")
    ranges = {k: v for k, v in summary.get("by_range", {}).items() if v["points"]}
    if ranges:
        lines += ["", "| range from the sensor | labelled points | mIoU | road | building | vegetation | car |"]
        lines.append("|---|---|---|---|---|---|---|")
        for name, r in ranges.items():
            cells = [f"{r['per_class_iou'][c]:.1f}" if c in r["per_class_iou"] else "-"
                     for c in ("road", "building", "vegetation", "car")]  # fmt: skip
            miou = "-" if r["miou"] is None else f"{r['miou']:.1f}"
            lines.append(f"| {name} | {r['points']} | {miou} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", help="scans folder: points/ + labels/ (.npy), or SemanticKITTI root / sequences / sequence"
    )
    parser.add_argument("--checkpoint", default=None, help="student directory (default: the shipped default student)")
    parser.add_argument("--vocabulary", default=None, help="vocabulary (default: the checkpoint's own)")
    parser.add_argument(
        "--class-map", default=None, help="config/class_maps name from the vocabulary to semantickitti19"
    )
    parser.add_argument("--sequences", nargs="*", default=None, help="SemanticKITTI sequences to read (default: all)")
    parser.add_argument("--every", type=int, default=1, help="every N-th scan")
    parser.add_argument("--max-scans", type=int, default=0, help="at most N scans (0 = all)")
    parser.add_argument(
        "--mount-height", type=float, default=KITTI_MOUNT_HEIGHT, help="sensor height above the road (m)"
    )
    parser.add_argument("--out", default="runs/evaluate_scans", help="folder for bev_*.png and summary.json")
    parser.add_argument("--bev-scans", type=int, default=2, help="bird's-eye PNGs for the first N scans")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument(
        "--frame",
        choices=("base_link", "lidar_top"),
        default=None,
        help="the model's input frame when its model.json records none (default: lidar_top, older students)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig
    from clip2scene_ros.models.registry import CONFIG_FILE

    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = Path(args.checkpoint) if args.checkpoint else DEFAULT_STUDENT
    meta = json.loads((ckpt / CONFIG_FILE).read_text()) if (ckpt / CONFIG_FILE).is_file() else {}
    extra = meta.get("extra", {})
    vocabulary = args.vocabulary or extra.get("vocabulary") or "synthetic"
    seg = Segmenter.from_config(SegmenterConfig(checkpoint=str(ckpt), vocabulary=vocabulary))
    frame = model_frame(extra) if args.frame is None or extra.get("frame") else {"name": args.frame}
    out = Path(args.out)
    scans = iter_scans(args.path, args.sequences, args.every, args.max_scans)
    ev = evaluate_scans(seg, scans, frame, out_dir=out, bev_scans=args.bev_scans, class_map=args.class_map,
                        mount_height=args.mount_height)  # fmt: skip
    summary = {"checkpoint": str(ckpt), "frame": frame["name"], **ev.summary(), "bev": [str(p) for p in ev.bev]}
    out.mkdir(parents=True, exist_ok=True)
    if ev.confusion.matrix[1:].sum():
        from clip2scene_ros.evaluation.report import plot_confusion

        title = f"where each class's points went ({ev.scans} scans)"
        summary["confusion_png"] = str(plot_confusion(ev.confusion, out / "confusion.png", title))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(format_table(summary))
    print(json.dumps(summary), flush=True)
    return 0
