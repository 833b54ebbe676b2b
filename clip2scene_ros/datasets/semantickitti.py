"""SemanticKITTI layout: ``sequences/XX/{velodyne,labels,image_2}``, ``calib.txt``, ``poses.txt``.

Raw label ids are mapped to the 19 classes with the official learning map. Camera 2 (left colour)
is the one camera; sweeps are earlier scans registered through ``poses.txt`` (camera-0 poses,
LiDAR pose = pose @ Tr).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip2scene_ros.datasets.base import CameraFrame, PairingConfig, PointCloudDataset, Sample, Sweep
from clip2scene_ros.datasets.labels import SEMANTICKITTI_CLASSES_19, map_semantickitti
from clip2scene_ros.geometry import (
    kitti_camera_from_velodyne,
    kitti_intrinsics,
    read_kitti_calib,
    register_sweep,
)
from clip2scene_ros.geometry.frames import KITTI_VELODYNE_POSE
from clip2scene_ros.geometry.transforms import pose_to_matrix

TRAIN_SEQUENCES = ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"]
VAL_SEQUENCES = ["08"]


def _read_poses(path: Path) -> np.ndarray:
    rows = np.loadtxt(path, dtype=np.float64).reshape(-1, 12)
    out = np.tile(np.eye(4), (len(rows), 1, 1))
    out[:, :3, :] = rows.reshape(-1, 3, 4)
    return out


class SemanticKITTIDataset(PointCloudDataset):
    name = "semantickitti"
    class_names = SEMANTICKITTI_CLASSES_19

    def __init__(
        self,
        root: str | Path,
        sequences: list[str] | str = "train",
        num_sweeps: int = 1,
        load_images: bool = True,
        pairing: PairingConfig | None = None,
        camera: int = 2,
        frame: str = "lidar",
        velodyne_pose: tuple[float, ...] = KITTI_VELODYNE_POSE,
    ):
        super().__init__(pairing, num_sweeps, frame)
        self.base_from_velodyne = pose_to_matrix(velodyne_pose)
        self.root = Path(root)
        seq_root = self.root / "sequences" if (self.root / "sequences").is_dir() else self.root
        if isinstance(sequences, str):
            sequences = {"train": TRAIN_SEQUENCES, "val": VAL_SEQUENCES}.get(sequences, [sequences])
        self.frames: list[tuple[Path, str]] = []
        for seq in sequences:
            d = seq_root / seq
            scans = sorted((d / "velodyne").glob("*.bin"))
            self.frames += [(d, s.stem) for s in scans]
        if not self.frames:
            raise FileNotFoundError(f"no scans under {seq_root}/<seq>/velodyne for sequences {sequences}")
        self.load_images = load_images
        self.camera = camera
        self._poses: dict[Path, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def _poses_of(self, seq_dir: Path) -> np.ndarray | None:
        if seq_dir not in self._poses:
            p = seq_dir / "poses.txt"
            self._poses[seq_dir] = _read_poses(p) if p.is_file() else None
        return self._poses[seq_dir]

    @staticmethod
    def _scan(seq_dir: Path, frame: str) -> np.ndarray:
        return np.fromfile(seq_dir / "velodyne" / f"{frame}.bin", dtype=np.float32).reshape(-1, 4)

    def load(self, index: int) -> Sample:
        seq_dir, frame = self.frames[index]
        points = self._scan(seq_dir, frame)
        label_path = seq_dir / "labels" / f"{frame}.label"
        labels = None
        if label_path.is_file():
            raw = np.fromfile(label_path, dtype=np.uint32)
            if len(raw) != len(points):
                raise ValueError(f"{label_path}: {len(raw)} labels for {len(points)} points")
            labels = map_semantickitti(raw)
        cameras, calib = [], None
        if (seq_dir / "calib.txt").is_file():
            calib = read_kitti_calib(seq_dir / "calib.txt")
            img_path = seq_dir / f"image_{self.camera}" / f"{frame}.png"
            if img_path.is_file():
                from PIL import Image

                with Image.open(img_path) as im:
                    image = (
                        np.asarray(im.convert("RGB"))
                        if self.load_images
                        else np.zeros((im.height, im.width, 3), np.uint8)
                    )
                cameras.append(
                    CameraFrame(
                        f"image_{self.camera}",
                        image,
                        kitti_intrinsics(calib, self.camera),
                        kitti_camera_from_velodyne(calib, self.camera),
                    )
                )
        sweeps = [Sweep(points, 0.0, labels)]
        poses = self._poses_of(seq_dir)
        if self.num_sweeps > 1 and poses is not None and calib is not None:
            tr = kitti_camera_from_velodyne(
                {
                    "Tr": calib.get("Tr", calib.get("Tr_velo_to_cam")),
                    "P0": np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0.0]),
                },
                0,
            )
            i = int(frame)
            for k in range(1, self.num_sweeps):
                j = i - k
                if j < 0 or not (seq_dir / "velodyne" / f"{j:06d}.bin").is_file():
                    break
                reg = register_sweep(self._scan(seq_dir, f"{j:06d}"), poses[j], tr, poses[i], tr)
                sweeps.append(Sweep(reg, 0.1 * k))
        return Sample(f"{seq_dir.name}/{frame}", self.name, points, labels, cameras, sweeps,
                      meta={"base_from_lidar": self.base_from_velodyne})  # fmt: skip
