"""Reports a person reads: markdown + JSON + PNG plots (matplotlib, Agg backend).

``write_report`` takes a summary dict (JSON-serialisable) and optional plot inputs, writes
``report.md``, ``report.json`` and the PNGs next to them, and returns the paths it wrote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip2scene_ros.evaluation.metrics import ConfusionMatrix


@dataclass
class BevFrame:
    """One labelled cloud for a bird's-eye view (points in the sensor frame)."""

    xyz: np.ndarray  # float32 [P, 3]
    labels: np.ndarray  # int [P] model label ids (0 = none)
    class_names: dict[int, str]  # id -> name
    title: str = ""
    gt: np.ndarray | None = None  # ground-truth ids (mapped to the prediction's ids) for a side panel
    gt_names: dict[int, str] | None = None


@dataclass
class QueryPlot:
    text: str
    xyz: np.ndarray  # [P, 3]
    scores: np.ndarray  # float32 [P] the answer's score per point: relevance (-1 = not returned)
    matches: np.ndarray  # int indices of the returned points
    message: str = ""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _crop(xyz: np.ndarray, extent: float) -> np.ndarray:
    return np.isfinite(xyz).all(axis=1) & (np.abs(xyz[:, 0]) < extent) & (np.abs(xyz[:, 1]) < extent)


def plot_bev(frame: BevFrame, path: Path, extent: float = 40.0) -> Path:
    """Top-down view coloured by class (the legend lists the classes present)."""
    from matplotlib.patches import Patch

    from clip2scene_ros.inference.segmenter import palette

    plt = _plt()
    panels = [(frame.labels, frame.class_names, frame.title or "prediction")]
    if frame.gt is not None:
        panels.append((frame.gt, frame.gt_names or frame.class_names, "ground truth"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.6, 5.2), squeeze=False)
    keep = _crop(frame.xyz, extent)
    xyz = frame.xyz[keep]
    handles: dict[int, Patch] = {}
    for ax, (labels, names, title) in zip(axes[0], panels, strict=True):
        lab = np.asarray(labels)[keep].astype(np.int64)
        pal = palette(int(max(max(names, default=0), lab.max(initial=0)))) / 255.0
        order = np.argsort(xyz[:, 2])  # draw low points first so objects stay visible
        ax.scatter(xyz[order, 0], xyz[order, 1], c=pal[lab[order]], s=1.0, linewidths=0, rasterized=True)
        ax.set_aspect("equal")
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_facecolor("#101010")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ids, counts = np.unique(lab, return_counts=True)
        for i in ids[np.argsort(-counts)]:
            if i in names and i not in handles:
                handles[int(i)] = Patch(color=pal[i], label=names[i])
    fig.legend(handles=list(handles.values()), loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_query(q: QueryPlot, path: Path, extent: float = 40.0) -> Path:
    """Top-down view: every point grey, the query's matches coloured by their score."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    keep = _crop(q.xyz, extent)
    ax.scatter(q.xyz[keep, 0], q.xyz[keep, 1], c="#5a5a5a", s=0.8, linewidths=0, rasterized=True)
    m = np.asarray(q.matches, dtype=np.int64)
    m = m[keep[m]] if m.size else m
    if m.size:
        sc = ax.scatter(q.xyz[m, 0], q.xyz[m, 1], c=q.scores[m], cmap="autumn_r", s=4.0, linewidths=0)
        fig.colorbar(sc, ax=ax, label="relevance")
    ax.set_aspect("equal")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_facecolor("#101010")
    ax.set_title(f"query: '{q.text}' ({len(q.matches)} points)", fontsize=10)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_iou(conf: ConfusionMatrix, path: Path, title: str = "") -> Path:
    plt = _plt()
    iou = conf.iou() * 100
    names = conf.class_names
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    y = np.arange(len(names))
    vals = np.nan_to_num(iou, nan=0.0)
    ax.barh(y, vals, color=["#4c72b0" if np.isfinite(v) else "#cccccc" for v in iou])
    for yi, v in zip(y, iou, strict=True):
        ax.text(min(np.nan_to_num(v), 95) + 1, yi, "n/a" if not np.isfinite(v) else f"{v:.1f}", va="center", fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.axvline(conf.miou() * 100, color="#c44e52", ls="--", lw=1, label=f"mIoU {conf.miou() * 100:.1f}")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "per-class IoU", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion(conf: ConfusionMatrix, path: Path, title: str = "") -> Path:
    """Row-normalised confusion (where each ground-truth class's points went, in %) over the
    classes present in the ground truth; columns are those classes, then the other predicted ones."""
    plt = _plt()
    m = conf.matrix[1:, :]  # gt rows; columns: 0 = no class, then the classes
    rows = np.flatnonzero(m.sum(axis=1) > 0)
    if rows.size == 0:
        raise ValueError("the confusion matrix holds no labelled points")
    names = ["(none)", *conf.class_names]
    used = np.flatnonzero(m[rows].sum(axis=0) > 0)
    gt_cols = (rows + 1).tolist()  # the ground-truth classes first, in the rows' order
    taken = set(gt_cols)
    cols = [*gt_cols, *(c for c in used.tolist() if c not in taken)]
    frac = m[np.ix_(rows, cols)] / m[rows].sum(axis=1, keepdims=True) * 100
    fig, ax = plt.subplots(figsize=(0.42 * len(cols) + 2.4, 0.36 * len(rows) + 1.8))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=100, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if frac[i, j] >= 1:
                ax.text(j, i, f"{frac[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 60 else "black")  # fmt: skip
    ax.set_xticks(range(len(cols)), [names[c] for c in cols], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [conf.class_names[r] for r in rows], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "confusion (% of each ground-truth class)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_latency(latencies_ms: Sequence[float], path: Path) -> Path:
    plt = _plt()
    a = np.asarray(latencies_ms, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(a, bins=max(5, min(40, len(a) // 2)), color="#55a868")
    for q, c in ((50, "#4c72b0"), (95, "#c44e52")):
        v = float(np.percentile(a, q))
        ax.axvline(v, color=c, ls="--", lw=1, label=f"p{q} {v:.0f} ms")
    ax.set_xlabel("end-to-end latency: publish -> labelled cloud (ms)")
    ax.set_ylabel("frames")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def markdown(summary: dict, images: dict[str, str]) -> str:
    """The report as markdown: headline figures, per-class table, latency, the images."""
    lines = [f"# {summary.get('title', 'clip2scene replay report')}", ""]
    for k in ("bag", "node", "model", "vocabulary", "gt_taxonomy", "label_mapping", "rate"):
        if k in summary:
            lines.append(f"- **{k.replace('_', ' ')}**: {summary[k]}")
    lines.append("")
    frames = summary.get("frames", {})
    if frames:
        lines += ["## Frames", "", "| sent | labelled | lost (no output) | node drops | throughput (Hz) | wall (s) |",
                  "|---:|---:|---:|---:|---:|---:|",
                  f"| {frames.get('sent')} | {frames.get('received')} | {frames.get('lost')} | "
                  f"{_fmt(frames.get('node_drops'))} | {_fmt(frames.get('throughput_hz'))} | "
                  f"{_fmt(frames.get('wall_s'))} |", ""]  # fmt: skip
        if frames.get("node_skipped_no_tf"):
            lines += [f"The node skipped {frames['node_skipped_no_tf']} clouds: no transform from the cloud's frame "
                      "into the model's base frame (the bag lacks /tf_static or /tf for it; node parameter lidar_pose "
                      "gives the mounting instead).", ""]  # fmt: skip
    rt = summary.get("realtime")
    if rt:
        rl = rt.get("latency_ms") or {}
        lines += [f"## Real time ({rt.get('rate')})", "",
                  "| sent | labelled | lost (no output) | node drops | latency p50 (ms) | latency p95 (ms) | mIoU |",
                  "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {rt.get('sent')} | {rt.get('received')} | {rt.get('lost')} | {_fmt(rt.get('node_drops'))} | "
                  f"{_fmt(rl.get('p50'))} | {_fmt(rl.get('p95'))} | {_fmt(rt.get('miou'))} |", ""]  # fmt: skip
    lat = summary.get("latency_ms", {})
    if lat.get("count"):
        lines += ["## Latency (ms)", "", "| " + " | ".join(k for k in lat) + " |",
                  "|" + "---:|" * len(lat), "| " + " | ".join(_fmt(v) for v in lat.values()) + " |", ""]  # fmt: skip
    seg = summary.get("segmentation")
    if seg:
        missing = seg.get("frames_without_output")
        lost = (f" {missing} of {seg.get('frames_with_gt_sent')} labelled frames sent produced no output and are "
                "not in it (lost)." if missing else "")
        lines += ["## Segmentation", "", f"**mIoU {_fmt(seg['miou'])}** over {seg['points_evaluated']} points "
                  f"(accuracy {_fmt(seg['accuracy'])}), {seg.get('frames', '?')} frames that came back "
                  f"labelled.{lost}", "",
                  "| class | IoU (%) | points |", "|---|---:|---:|"]  # fmt: skip
        for name, v in seg["per_class_iou"].items():
            lines.append(f"| {name} | {_fmt(v)} | {seg['per_class_points'][name]} |")
        lines.append("")
    elif "segmentation" in summary:
        lines += ["## Segmentation", "", "The bag has no ground-truth label topic: no mIoU.", ""]
    queries = summary.get("queries") or []
    if queries:
        lines += ["## Queries", "", "| phrase | points | best score | answer |", "|---|---:|---:|---|"]
        for q in queries:
            lines.append(f"| {q['text']} | {q['matches']} | {_fmt(q.get('best'))} | {q['message']} |")
        lines.append("")
    if images:
        lines += ["## Pictures", ""]
        lines += [f"![{k}]({v})" for k, v in images.items()]
        lines.append("")
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    summary: dict,
    *,
    confusion: ConfusionMatrix | None = None,
    latencies_ms: Sequence[float] = (),
    bev: BevFrame | None = None,
    queries: Sequence[QueryPlot] = (),
) -> dict[str, Path]:
    """Write report.md / report.json and the plots; returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    if bev is not None:
        images["bird's-eye view"] = plot_bev(bev, out / "bev.png").name
    for i, q in enumerate(queries):
        images[f"query '{q.text}'"] = plot_query(q, out / f"query_{i}.png").name
    if confusion is not None and confusion.matrix[1:].sum():
        images["per-class IoU"] = plot_iou(confusion, out / "per_class_iou.png").name
    if len(latencies_ms):
        images["latency"] = plot_latency(latencies_ms, out / "latency.png").name
    summary = {**summary, "images": images}
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(markdown(summary, images))
    return {"markdown": out / "report.md", "json": out / "report.json", **{k: out / v for k, v in images.items()}}
