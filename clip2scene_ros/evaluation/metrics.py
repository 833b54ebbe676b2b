"""Segmentation metrics and the class mapping between a model vocabulary and ground truth.

Conventions (replay, offline bag evaluation and the training package's evaluator all count with
:func:`confusion_matrix` and :func:`iou_from_confusion`): ground-truth id 0 is "ignore" and never
counts; a predicted id that maps to 0 (the node's "not segmented" label, or a vocabulary class
without a ground-truth counterpart) counts as a miss; classes absent from the ground truth are left
out of the mean.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Ground-truth taxonomies are the vocabularies in config/vocab/; class-map files use these aliases.
_TAXONOMY_ALIASES = {"nuscenes16": "nuscenes", "semantickitti19": "semantickitti"}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def gt_class_names(taxonomy: str) -> list[str]:
    """Names of ground-truth ids 1..N of a taxonomy (a ``config/vocab`` name, alias or YAML path)."""
    from clip2scene_ros.inference.segmenter import load_vocabulary

    vocab = load_vocabulary(_TAXONOMY_ALIASES.get(taxonomy, taxonomy))
    if vocab.ignore_index != 0:
        raise ValueError(f"ground-truth taxonomy '{taxonomy}' must number its classes 1..N (ignore_index 0)")
    return vocab.class_names


@dataclass
class LabelMapping:
    """Predicted id -> ground-truth id lookup table, and how it was found (for the report)."""

    lut: np.ndarray  # int64 [max_pred_id + 1]
    gt_names: list[str]
    how: str

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        pred = np.asarray(pred).astype(np.int64)
        out = np.zeros(pred.shape, dtype=np.int64)
        ok = (pred >= 0) & (pred < len(self.lut))
        out[ok] = self.lut[pred[ok]]
        return out


def resolve_label_mapping(
    vocabulary: str, classes: Sequence[tuple[int, str]], gt_taxonomy: str, class_map: str | None = None
) -> LabelMapping:
    """How the model's labels (``classes`` = [(id, name)] of its vocabulary) become ground-truth ids.

    In order: an explicit ``class_map`` (``config/class_maps/<name>.yaml``); the same taxonomy
    (identity); a class map ``<vocabulary>_to_<gt>`` shipped in config/class_maps; class names
    (case/punctuation-insensitive). Fails with the options when none applies.
    """
    from clip2scene_ros.sim.taxonomy import load_class_map

    gt_names = gt_class_names(gt_taxonomy)
    size = max([i for i, _ in classes] + [0]) + 1
    vocab_key = _TAXONOMY_ALIASES.get(vocabulary, vocabulary)
    gt_key = _TAXONOMY_ALIASES.get(gt_taxonomy, gt_taxonomy)

    def from_table(name: str) -> LabelMapping:
        table = load_class_map(name)
        lut = np.zeros(max(size, len(table["lut"])), dtype=np.int64)
        lut[: len(table["lut"])] = table["lut"]
        if lut.max() > len(gt_names):
            raise ValueError(f"class map '{name}' maps to id {lut.max()} but '{gt_taxonomy}' has {len(gt_names)}")
        return LabelMapping(lut, gt_names, f"class map {name}")

    if class_map:
        return from_table(class_map)
    if vocab_key == gt_key:
        lut = np.arange(size, dtype=np.int64)
        lut[lut > len(gt_names)] = 0
        return LabelMapping(lut, gt_names, "identity (same taxonomy)")
    for cand in (f"{vocabulary}_to_{gt_taxonomy}", f"{vocab_key}_to_{gt_key}",
                 *(f"{vocab_key}_to_{a}" for a, k in _TAXONOMY_ALIASES.items() if k == gt_key)):  # fmt: skip
        try:
            return from_table(cand)
        except FileNotFoundError:
            continue
    index = {_norm(n): i + 1 for i, n in enumerate(gt_names)}
    lut = np.zeros(size, dtype=np.int64)
    matched = 0
    for cid, name in classes:
        if _norm(name) in index:
            lut[cid] = index[_norm(name)]
            matched += 1
    if matched == 0:
        raise ValueError(
            f"cannot map vocabulary '{vocabulary}' to ground truth '{gt_taxonomy}': no class names in common "
            f"and no config/class_maps/{vocab_key}_to_{gt_key}.yaml; run the node with --vocabulary {gt_key} "
            "or pass --class-map NAME"
        )
    return LabelMapping(lut, gt_names, f"by class name ({matched} of {len(classes)} classes matched)")


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """[C+1, C+1] counts (rows = ground truth, cols = prediction) over ids 0..C (0 = ignore)."""
    pred = np.clip(np.asarray(pred, dtype=np.int64), 0, num_classes)
    gt = np.asarray(gt, dtype=np.int64)
    if gt.min(initial=0) < 0 or gt.max(initial=0) > num_classes:
        raise ValueError(f"ground-truth ids must be within 0..{num_classes}, got {gt.min()}..{gt.max()}")
    return np.bincount(gt * (num_classes + 1) + pred, minlength=(num_classes + 1) ** 2).reshape(
        num_classes + 1, num_classes + 1
    )


def iou_from_confusion(conf: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-class IoU for ids 1..C (NaN for classes absent from the ground truth) and their mean.

    Ground-truth-ignored points (row 0) are dropped; predictions of 0 count as misses."""
    c = conf[1:, :].astype(np.float64)  # labelled rows only
    tp = np.diag(c[:, 1:])
    gt = c.sum(1)
    pred = c[:, 1:].sum(0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(gt > 0, tp / union, np.nan)
    return iou, float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan")


class ConfusionMatrix:
    """Rows: ground truth 0..N (row 0 ignored); columns: prediction 0..N (0 = no class)."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        n = len(self.class_names) + 1
        self.matrix = np.zeros((n, n), dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = np.asarray(pred).astype(np.int64).ravel(), np.asarray(gt).astype(np.int64).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"{len(pred)} predictions for {len(gt)} ground-truth labels: point order differs")
        gt = np.where((gt > 0) & (gt <= self.num_classes), gt, 0)  # ids outside the taxonomy are ignored
        pred = np.where((pred >= 0) & (pred <= self.num_classes), pred, 0)
        self.matrix += confusion_matrix(pred, gt, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """float [N]: IoU per class, NaN for classes absent from the ground truth (offline convention)."""
        return iou_from_confusion(self.matrix)[0]

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def accuracy(self) -> float:
        total = self.matrix[1:].sum()
        return float(np.diag(self.matrix)[1:].sum() / total) if total else float("nan")

    def to_dict(self) -> dict:
        iou = self.iou()
        present = self.matrix[1:].sum(axis=1)
        return {
            "miou": _round(self.miou() * 100),
            "accuracy": _round(self.accuracy() * 100),
            "points_evaluated": int(self.matrix[1:].sum()),
            "per_class_iou": {n: _round(v * 100) for n, v in zip(self.class_names, iou, strict=True)},
            "per_class_points": {n: int(c) for n, c in zip(self.class_names, present, strict=True)},
        }


def latency_summary(latencies_ms: Sequence[float]) -> dict:
    """min / mean / p50 / p90 / p95 / p99 / max in ms (empty -> zeros and count 0)."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        return {"count": 0}
    out = {"count": int(a.size), "mean": a.mean(), "min": a.min(), "max": a.max()}
    for q in (50, 90, 95, 99):
        out[f"p{q}"] = float(np.percentile(a, q))
    return {k: (_round(v, 2) if isinstance(v, float | np.floating) else v) for k, v in out.items()}


def _round(v: float, nd: int = 3) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else round(v, nd)
