"""Bird's-eye pictures of a student on real LiDAR for the README (writes docs/real_*.png).

- the real nuScenes key frame (HDL-32E, LIDAR_TOP) of ../shared/data/real/nuscenes-sample, brought
  into the base frame with its own calibrated_sensor record;
- the real KITTI object frame 000001 (HDL-64E, Velodyne 1.73 m above the road);
- a real SemanticKITTI scan with its ground truth beside the prediction (19 classes).

Predictions are the student's vocabulary classes (the synthetic vocabulary for the shipped
student). Usage::

    python scripts/real_lidar_pictures.py [--checkpoint DIR] [--real ../shared/data/real] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def nuscenes_keyframe(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points [P, 5] of the key frame and base_from_lidar (4x4) from its calibrated_sensor record."""
    from clip2scene_ros.geometry import make_transform, quaternion_to_matrix

    tables = root / "v1.0-mini"
    sensors = {s["token"]: s["channel"] for s in json.loads((tables / "sensor.json").read_text())}
    cs = next(c for c in json.loads((tables / "calibrated_sensor.json").read_text())
              if sensors[c["sensor_token"]] == "LIDAR_TOP")  # fmt: skip
    path = next((root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    return pts, make_transform(quaternion_to_matrix(cs["rotation"]), cs["translation"])


def segment_base(seg, points_base: np.ndarray, frame: dict) -> np.ndarray:
    """Labels (model vocabulary ids) of base-frame points, fed in the model's frame."""
    from clip2scene_ros.evaluation.scans import KITTI_MOUNT_HEIGHT, kitti_to_model_frame

    kitti = points_base.copy()
    kitti[:, 2] -= KITTI_MOUNT_HEIGHT  # the evaluation helper converts from the KITTI Velodyne frame
    pts = kitti_to_model_frame(kitti, frame)
    cols = [pts[:, :3]] + [np.zeros((len(pts), 1), np.float32) for _ in seg.feature_fields]
    return seg.segment(np.concatenate(cols, axis=1)).labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "clip2scene_ros" / "assets" / "student"))
    ap.add_argument("--real", default=str(REPO.parent / "shared" / "data" / "real"))
    ap.add_argument("--out", default=str(REPO / "docs"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from clip2scene_ros.evaluation import scans as S
    from clip2scene_ros.evaluation.report import BevFrame, plot_bev
    from clip2scene_ros.geometry import transform_points
    from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig

    torch.set_num_threads(args.threads)
    real, out = Path(args.real), Path(args.out)
    if not real.is_dir():
        print(f"real samples not found at {real}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    extra = json.loads((Path(args.checkpoint) / "model.json").read_text()).get("extra", {})
    frame = S.model_frame(extra)
    seg = Segmenter.from_config(
        SegmenterConfig(checkpoint=args.checkpoint, vocabulary=extra.get("vocabulary", "synthetic"))
    )
    names = {int(i): n for i, n in zip(seg.vocabulary.ids, seg.vocabulary.class_names, strict=True)}
    written = []

    pts, base_from_lidar = nuscenes_keyframe(real / "nuscenes-sample")
    base = transform_points(base_from_lidar, pts[:, :3])
    keep = np.linalg.norm(pts[:, :2], axis=1) > 2.5  # the car's own roof and mount returns
    labels = np.zeros(len(pts), np.int64)
    labels[keep] = segment_base(seg, base[keep], frame)
    title = "real nuScenes key frame (HDL-32E), base frame"
    written.append(plot_bev(BevFrame(base, labels, names, title), out / "real_nuscenes_bev.png"))

    velo = np.fromfile(real / "kitti-frame" / "training" / "velodyne" / "000001.bin", np.float32).reshape(-1, 4)
    base = velo[:, :3] + np.array([0, 0, S.KITTI_MOUNT_HEIGHT], np.float32)
    labels = segment_base(seg, base, frame)
    title = "real KITTI frame 000001 (HDL-64E), base frame"
    written.append(plot_bev(BevFrame(base, labels, names, title), out / "real_kitti_bev.png"))

    scan = next(S.iter_scans(real / "semantickitti-scans", limit=1))
    ev = S.evaluate_scans(seg, [scan], frame, out_dir=out, bev_scans=1)
    target = out / "real_semantickitti_bev.png"
    ev.bev[0].replace(target)
    written.append(target)
    for p in written:
        print(p)
    print(json.dumps({"pictures": [str(p) for p in written], "semantickitti_miou": ev.miou()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
