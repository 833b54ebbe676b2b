"""Render the calibration overlay that segment_node publishes on ~/overlay/<camera>, as a PNG.

    python scripts/overlay_picture.py                       # synthetic frame, points in class colours
    python scripts/overlay_picture.py --nuscenes ../shared/data/real/nuscenes-sample --camera CAM_FRONT

The synthetic picture (ground-truth labels through the node's label palette) is docs/overlay_synthetic.png.
The nuScenes one (points coloured by depth) stays local: those images may not be copied into the repository.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def synthetic() -> np.ndarray:
    from clip2scene_ros.geometry.overlay import draw_overlay
    from clip2scene_ros.inference.segmenter import palette
    from clip2scene_ros.sim import SimConfig, generate_sequence

    cfg = SimConfig.default().with_overrides(**{"cameras.names": ["cam_front"], "threads": 1})
    f = next(generate_sequence(cfg, seed=7, num_frames=1))
    cam = f.cameras[0]
    cam_from_lidar = np.linalg.inv(cam.cam_to_ego) @ f.lidar_to_ego
    colors = palette(int(f.labels.max()))[f.labels]
    return draw_overlay(cam.image, cam.K, cam_from_lidar, f.points[:, :3], colors).image


def nuscenes(root: Path, camera: str) -> np.ndarray:
    from nuscenes.nuscenes import NuScenes
    from PIL import Image

    from clip2scene_ros.geometry import nuscenes_camera_from_lidar
    from clip2scene_ros.geometry.overlay import draw_overlay

    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    sample = nusc.sample[0]
    lidar_sd, cam_sd = (nusc.get("sample_data", sample["data"][c]) for c in ("LIDAR_TOP", camera))
    cam_cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
    lidar_cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    lidar_pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    cam_pose = nusc.get("ego_pose", cam_sd["ego_pose_token"])
    T = nuscenes_camera_from_lidar(lidar_cs, lidar_pose, cam_cs, cam_pose)
    image = np.asarray(Image.open(root / cam_sd["filename"]).convert("RGB"))
    pts = np.fromfile(root / lidar_sd["filename"], dtype=np.float32).reshape(-1, 5)[:, :3]
    return draw_overlay(image, np.array(cam_cs["camera_intrinsic"]), T, pts, colors=None, radius=2).image


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nuscenes", type=Path, help="nuScenes dataroot holding one v1.0-mini key frame")
    ap.add_argument("--camera", default="CAM_FRONT")
    ap.add_argument("--out", type=Path, help="PNG to write (default: docs/overlay_synthetic.png, overlay_<camera>.png)")
    ap.add_argument("--width", type=int, default=800, help="width of the written picture")
    args = ap.parse_args()
    import cv2

    img = nuscenes(args.nuscenes, args.camera) if args.nuscenes else synthetic()
    out = args.out or (Path(f"overlay_{args.camera}.png") if args.nuscenes else Path("docs/overlay_synthetic.png"))
    h = round(img.shape[0] * args.width / img.shape[1])
    cv2.imwrite(str(out), cv2.resize(img, (args.width, h), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    print(f"wrote {out} ({args.width}x{h})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
