"""Do text queries mean what they say? Calibrated query answers against the ground truth.

On the held-out synthetic test drive (the demo's drive: first test-split seed), the shipped default
student segments every frame; then, for every vocabulary class phrase and two paraphrases per class
that are not among the vocabulary's names, the default answer of a query (relevance >= 0.5, the
answer `/query_text` gives when the request sets neither threshold nor top_k) is compared with the
ground-truth points of that class: IoU per phrase, accumulated over all frames (points no model
sees, label 0 in the ground truth, are left out as in the segmentation metric).

Reference in the same run: the segmentation mIoU on the same frames and points. A query answer can
at best find the class as the segmentation does, so the target is query_miou >= 0.9 x
segmentation_miou. Paraphrases are reported (the shipped teacher's text tower only learned the
vocabulary's synonyms, so most paraphrases are out of its language).

Usage: python benchmarks/query_quality.py [--frames 6] [--seed S] [--checkpoint DIR --teacher T]
Ends with one JSON line: query_miou, paraphrase_miou, segmentation_miou, ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

# Two phrasings per class of config/vocab/synthetic.yaml that are not among its names.
PARAPHRASES: dict[str, tuple[str, str]] = {
    "road": ("the road surface", "a paved street"),
    "sidewalk": ("a walkway next to the road", "the pedestrian pavement"),
    "terrain": ("a patch of grass", "open ground"),
    "building": ("a house facade", "the walls of houses"),
    "vegetation": ("a tree", "bushes and trees"),
    "car": ("a parked vehicle", "a parked car"),
    "truck": ("a delivery truck", "a big lorry"),
    "bus": ("a public bus", "a large bus"),
    "motorcycle": ("a motor bike", "a parked motorcycle"),
    "bicycle": ("a bike", "a parked bicycle"),
    "pedestrian": ("a person walking", "people"),
    "pole": ("a lamp post", "a street pole"),
    "traffic_sign": ("a street sign", "a sign by the road"),
    "traffic_cone": ("an orange cone", "a road cone"),
    "barrier": ("a road block", "a concrete barrier"),
}


def iou(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--seed", type=int, help="scene seed (default: the first test-split seed, as the demo)")
    ap.add_argument("--checkpoint", help="student checkpoint (default: the shipped student)")
    ap.add_argument("--teacher", help="teacher (default: the shipped teacher)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from clip2scene_ros.inference.relevance import DEFAULT_THRESHOLD
    from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig
    from clip2scene_ros.nodes.parameters import default_checkpoint
    from clip2scene_ros.sim import SimConfig, generate_sequence
    from clip2scene_ros.sim.splits import split_seeds

    seg = Segmenter.from_config(
        SegmenterConfig(checkpoint=args.checkpoint or str(default_checkpoint()), teacher=args.teacher)
    )
    seg.phrase_limiter = None  # offline: every phrase is wanted, the online rate limit does not apply
    vocab = seg.vocabulary
    names = list(vocab.class_names)
    missing = [n for n in names if n not in PARAPHRASES]
    if missing:
        print(f"no paraphrases for {missing}; this benchmark covers the synthetic vocabulary", file=sys.stderr)
        return 2
    synonyms = {n.lower() for c in vocab.classes for n in c.names}
    clash = [p for pair in PARAPHRASES.values() for p in pair if p.lower() in synonyms]
    assert not clash, f"paraphrases must not be vocabulary names: {clash}"
    seed = split_seeds("test", 1)[0] if args.seed is None else args.seed
    scale = seg.input.intensity_scale  # the checkpoint's, as the node applies it

    class_phrases = {c.name: c.names[0] for c in vocab.classes}  # the canonical phrase of each class
    phrases = [(n, class_phrases[n], "class") for n in names]
    phrases += [(n, p, "paraphrase") for n in names for p in PARAPHRASES[n]]
    inter = {p: 0 for _, p, _ in phrases}
    union = {p: 0 for _, p, _ in phrases}
    seg_inter, seg_union = np.zeros(len(names), np.int64), np.zeros(len(names), np.int64)
    t0 = time.perf_counter()
    cfg = SimConfig.default()
    for frame in generate_sequence(cfg, seed, args.frames, cameras=False):
        pts = frame.points[:, : 3 + len(seg.feature_fields)].astype(np.float32)
        pts[:, 3:] *= scale  # the checkpoint's input contract (no column when it reads no intensity)
        base_from_sensor = frame.lidar_to_ego if seg.input.frame.name == "base_link" else None
        result = seg.segment(pts, base_from_sensor=base_from_sensor)
        gt = frame.labels.astype(np.int64)
        known = gt > 0
        for ci, cid in enumerate(vocab.ids):
            i, u = iou((result.labels == cid) & known, (gt == cid) & known)
            seg_inter[ci] += i
            seg_union[ci] += u
        for cls, phrase, _ in phrases:
            answer = seg.relevance(phrase, result) >= DEFAULT_THRESHOLD
            cid = vocab.ids[names.index(cls)]
            i, u = iou(answer & known, (gt == cid) & known)
            inter[phrase] += i
            union[phrase] += u
    elapsed = time.perf_counter() - t0

    present = seg_union > 0  # classes absent from the drive (and never predicted) are not scored
    seg_iou = np.where(present, seg_inter / np.maximum(seg_union, 1), np.nan)
    rows, q_iou, p_iou = [], [], []
    for ci, n in enumerate(names):
        if not present[ci]:
            continue
        qi = inter[class_phrases[n]] / max(union[class_phrases[n]], 1)
        ps = [inter[p] / max(union[p], 1) for p in PARAPHRASES[n]]
        q_iou.append(qi)
        p_iou.extend(ps)
        rows.append((n, seg_iou[ci], class_phrases[n], qi, PARAPHRASES[n], ps))
    print(
        f"{args.frames} frames of test seed {seed}; {len(phrases)} phrases; {elapsed:.1f} s; "
        f"threads={args.threads}; answer = relevance >= {DEFAULT_THRESHOLD}"
    )
    print(f"{'class':14s} {'seg IoU':>8s} {'class phrase':>22s} {'IoU':>6s}   paraphrases (IoU)")
    for n, si, cp, qi, ps, pi in rows:
        para = ", ".join(f"'{p}' {v * 100:.1f}" for p, v in zip(ps, pi, strict=True))
        print(f"{n:14s} {si * 100:8.1f} {cp:>22s} {qi * 100:6.1f}   {para}")
    seg_miou = float(np.nanmean(seg_iou)) * 100
    query_miou = float(np.mean(q_iou)) * 100
    para_miou = float(np.mean(p_iou)) * 100
    ratio = query_miou / max(seg_miou, 1e-9)
    print(
        f"segmentation mIoU {seg_miou:.1f}; query mIoU {query_miou:.1f} ({ratio:.2f}x, target >= 0.9x); "
        f"paraphrase mIoU {para_miou:.1f}"
    )
    print(json.dumps({
        "query_miou": round(query_miou, 2), "paraphrase_miou": round(para_miou, 2),
        "segmentation_miou": round(seg_miou, 2), "ratio": round(ratio, 3), "target_met": ratio >= 0.9,
        "frames": args.frames, "seed": seed, "classes_scored": len(rows),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
