"""Write simulated drives in the SemanticKITTI layout.

::

    DIR/sequences/<seq>/velodyne/000000.bin   float32 x y z remission (KITTI velodyne frame: x forward,
                                              y left, z up; remission = intensity / 255)
    DIR/sequences/<seq>/labels/000000.label   uint32: raw SemanticKITTI id | instance << 16
                                              (config/class_maps/synthetic_to_semantickitti_raw.yaml)
    DIR/sequences/<seq>/image_2/000000.png    the front camera (first camera of the rig)
    DIR/sequences/<seq>/calib.txt             P0..P3 = [K | 0] of that camera, Tr = velodyne -> camera
    DIR/sequences/<seq>/poses.txt             camera poses relative to the first frame (KITTI odometry)
    DIR/sequences/<seq>/times.txt             seconds since the first frame

``<seq>`` is the scene seed zero-padded to two digits (seed 7 -> "07", seed 1003 -> "1003").
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from clip2scene_ros.geometry.transforms import invert_transform, rot_z
from clip2scene_ros.sim import taxonomy as C
from clip2scene_ros.sim.frame import Frame

# KITTI velodyne (x fwd, y left) <- our default nuScenes-style LiDAR frame (x right, y fwd)
VELO_FROM_LIDAR = np.array([[0.0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def velo_from_lidar(lidar_to_ego: np.ndarray) -> np.ndarray:
    """KITTI velodyne axes (x along the car) <- the LiDAR frame, undoing the sensor's mount yaw."""
    yaw = np.arctan2(lidar_to_ego[1, 0], lidar_to_ego[0, 0])
    return rot_z(float(yaw))


def sequence_name(seed: int) -> str:
    return f"{int(seed):02d}"


def _row(m: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(m, dtype=np.float64).reshape(-1))


def write_semantickitti_sequence(
    frames: Iterable[Frame], out_dir: str | Path, seed: int, camera: str | None = None
) -> Path:
    """Write one drive as ``sequences/<seq>``; returns the sequence folder."""
    seq = Path(out_dir) / "sequences" / sequence_name(seed)
    for sub in ("velodyne", "labels", "image_2"):
        (seq / sub).mkdir(parents=True, exist_ok=True)
    raw_lut = C.load_class_map("synthetic_to_semantickitti_raw")["lut"].astype(np.uint32)
    poses, times = [], []
    first_cam_world = None
    t0 = None
    tr = None
    n = 0
    for n, frame in enumerate(frames):
        cams = frame.cameras
        cam = None
        if cams:
            cam = next((c for c in cams if c.name == camera), None) if camera else cams[0]
            if cam is None:
                raise ValueError(f"camera {camera!r} not rendered; have {[c.name for c in cams]}")
        if tr is None:
            if cam is None:
                raise ValueError("the first frame needs a camera image (its calibration defines calib.txt)")
            K = cam.K
            cam_to_ego = cam.cam_to_ego
            # Tr: camera <- velodyne
            v_from_l = velo_from_lidar(frame.lidar_to_ego)
            tr = invert_transform(cam_to_ego) @ frame.lidar_to_ego @ invert_transform(v_from_l)
            p = np.hstack([K, np.zeros((3, 1))])
            text = "".join(f"P{i}: {_row(p)}\n" for i in range(4)) + f"Tr: {_row(tr[:3])}\n"
            (seq / "calib.txt").write_text(text)
            t0 = frame.timestamp_ns
        stem = f"{n:06d}"
        velo = frame.points.copy()
        velo[:, :3] = frame.points[:, :3] @ velo_from_lidar(frame.lidar_to_ego)[:3, :3].T.astype(np.float32)
        velo[:, 3] = frame.points[:, 3] / 255.0
        (seq / "velodyne" / f"{stem}.bin").write_bytes(velo.astype(np.float32).tobytes())
        inst = np.clip(frame.instances, 0, 0xFFFF).astype(np.uint32)
        label = raw_lut[frame.labels] | (inst << 16)
        (seq / "labels" / f"{stem}.label").write_bytes(label.astype(np.uint32).tobytes())
        if cam is not None:
            ok, buf = cv2.imencode(".png", cam.image[..., ::-1])
            (seq / "image_2" / f"{stem}.png").write_bytes(buf.tobytes())
        cam_world = frame.ego_pose @ cam_to_ego
        if first_cam_world is None:
            first_cam_world = cam_world
        poses.append(_row((invert_transform(first_cam_world) @ cam_world)[:3]))
        times.append(f"{(frame.timestamp_ns - t0) / 1e9:.6e}")
    if tr is None:
        raise ValueError("no frames to write")
    (seq / "poses.txt").write_text("\n".join(poses) + "\n")
    (seq / "times.txt").write_text("\n".join(times) + "\n")
    return seq
