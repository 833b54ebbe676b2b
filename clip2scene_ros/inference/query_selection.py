"""Which points answer a text query, and how they are grouped and coloured. ROS-free.

The segmenter gives one score per point (the calibrated relevance of ``inference.relevance``); a
query answer keeps either the ``top_k`` best segmented points or those above a threshold, best
first, capped at ``max_results``, and may group them into instances (centroid + box size) for a
robot to act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .segmenter import group_instances


@dataclass
class QuerySelection:
    indices: np.ndarray  # int64 [M]: matching point indices, best first
    scores: np.ndarray  # float32 [M]: their scores
    rule: str  # how they were chosen, for the answer message
    truncated: bool  # more matched than max_results
    best: float | None  # best score over the segmented points (None: nothing segmented)
    centroids: list[np.ndarray] = field(default_factory=list)  # per instance [3]
    sizes: list[np.ndarray] = field(default_factory=list)  # per instance box size [3]
    score_name: str = "similarity"

    def describe(self, text: str, num_points: int, instances: bool) -> str:
        return (
            f"'{text}': {len(self.indices)} of {num_points} points ({self.rule})"
            + (f", truncated to query.max_results={len(self.indices)}" if self.truncated else "")
            + (f", {len(self.centroids)} instances" if instances else "")
            + (f"; best {self.score_name} {self.best:.3f}" if self.best is not None else "")
        )


def select_matches(
    sim: np.ndarray,
    segmented: np.ndarray,
    threshold: float = 0.0,
    top_k: int = 0,
    max_results: int = 100_000,
    score_name: str = "similarity",
) -> QuerySelection:
    """Points of ``sim`` [P] among the ``segmented`` indices: the ``top_k`` best (when > 0), else
    those with similarity >= ``threshold``; sorted best first and capped at ``max_results``."""
    if max_results < 1:
        raise ValueError(f"max_results must be >= 1, got {max_results}")
    processed = np.zeros(len(sim), dtype=bool)
    processed[np.asarray(segmented, dtype=np.int64)] = True
    if top_k > 0:
        k = min(int(top_k), int(processed.sum()))
        cand = np.flatnonzero(processed)
        idx = cand[np.argpartition(-sim[cand], k - 1)[:k]] if k else cand[:0]
        rule = f"top {top_k}"
    else:
        idx = np.flatnonzero(processed & (sim >= threshold))
        rule = f"{score_name} >= {threshold:.3f}"
    idx = idx[np.argsort(-sim[idx], kind="stable")]
    truncated = len(idx) > max_results
    idx = idx[:max_results]
    best = float(sim[processed].max()) if processed.any() else None
    return QuerySelection(idx, sim[idx].astype(np.float32), rule, truncated, best, score_name=score_name)


def add_instances(selection: QuerySelection, xyz: np.ndarray, radius: float, min_points: int) -> QuerySelection:
    """Group the selected points of ``xyz`` [P, 3] into instances (largest first)."""
    if len(selection.indices):
        for centroid, size, _members in group_instances(xyz[selection.indices], radius, min_points):
            selection.centroids.append(np.asarray(centroid, dtype=np.float64))
            selection.sizes.append(np.asarray(size, dtype=np.float64))
    return selection


def highlight_colors(num_points: int, sim: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 [P, 3], match uint8 [P]): matches from red (weakest) to yellow (best), others grey."""
    colors = np.full((num_points, 3), 70, dtype=np.uint8)
    if len(indices):
        s = sim[indices]
        t = (s - s.min()) / max(float(s.max() - s.min()), 1e-6)
        colors[indices] = np.stack([np.full_like(t, 255), 255 * t, np.zeros_like(t)], axis=1).astype(np.uint8)
    match = np.zeros(num_points, dtype=np.uint8)
    match[indices] = 1
    return colors, match


def request_problem(text: str, max_length: int, threshold: float) -> str | None:
    """Why a query request cannot be answered as sent (None when it can)."""
    if not text:
        return "empty query text; send a phrase such as 'a parked car'"
    if len(text) > max_length:
        return f"query text has {len(text)} characters; the limit is {max_length} (parameter max_text_length)"
    if not math.isfinite(threshold):
        return f"threshold {threshold} is not a finite number"
    return None
