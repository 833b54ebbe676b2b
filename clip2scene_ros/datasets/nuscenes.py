"""nuScenes in the official layout (``v1.0-*/*.json``, ``samples/``, ``sweeps/``, ``lidarseg/``).

Reads the json tables directly (the same records the nuscenes-devkit reads, so anything the devkit
loads works here, including the simulator's nuScenes writer). Six cameras, previous LiDAR sweeps
registered into the key frame through ego poses, lidarseg merged to the 16 benchmark classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clip2scene_ros.datasets.base import CameraFrame, PairingConfig, PointCloudDataset, Sample, Sweep
from clip2scene_ros.datasets.labels import NUSCENES_CLASSES_16, nuscenes_fine_to_coarse_lut
from clip2scene_ros.geometry import nuscenes_camera_from_lidar, nuscenes_record_transform, register_sweep
from clip2scene_ros.geometry.sweeps import remove_ego_points

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class NuScenesDataset(PointCloudDataset):
    name = "nuscenes"
    class_names = NUSCENES_CLASSES_16

    def __init__(
        self,
        root: str | Path,
        version: str = "v1.0-trainval",
        split: str | None = None,
        scenes: list[str] | None = None,
        cameras: tuple[str, ...] = CAMERAS,
        num_sweeps: int = 1,
        sweep_window: int = 10,
        load_images: bool = True,
        pairing: PairingConfig | None = None,
        intensity_scale: float = 1.0 / 255.0,
        seed: int = 0,
        frame: str = "lidar",
    ):
        super().__init__(pairing, num_sweeps, frame)
        self.root = Path(root)
        self.version = version
        table_dir = self.root / version
        if not table_dir.is_dir():
            found = sorted(p.name for p in self.root.glob("v1.0-*")) if self.root.is_dir() else []
            raise FileNotFoundError(
                f"nuScenes tables not found at {table_dir}; pass version= one of {found or '[none found]'} "
                f"and root= the folder holding samples/, sweeps/ and {version}/"
            )
        self.tables = {}
        for t in ("sample", "sample_data", "calibrated_sensor", "ego_pose", "scene", "category"):
            records = json.loads((table_dir / f"{t}.json").read_text())
            self.tables[t] = {r["token"]: r for r in records}
        lidarseg = table_dir / "lidarseg.json"
        self.lidarseg = (
            {r["sample_data_token"]: r["filename"] for r in json.loads(lidarseg.read_text())}
            if lidarseg.is_file()
            else {}
        )
        cats = sorted(self.tables["category"].values(), key=lambda r: r.get("index", 0))
        self.label_lut = (
            nuscenes_fine_to_coarse_lut([c["name"] for c in cats])
            if cats and "index" in cats[0]
            else nuscenes_fine_to_coarse_lut()
        )
        # Key frames -> their LIDAR_TOP / camera sample_data.
        self.key_data: dict[str, dict[str, dict]] = {}
        for sd in self.tables["sample_data"].values():
            if sd.get("is_key_frame", True):
                channel = sd["filename"].split("/")[1] if "/" in sd["filename"] else ""
                self.key_data.setdefault(sd["sample_token"], {})[channel] = sd
        wanted = set(scenes) if scenes else None
        if split is not None and wanted is None:
            wanted = self._split_scenes(split)
        samples = sorted(self.tables["sample"].values(), key=lambda s: (s["scene_token"], s["timestamp"]))
        self.samples = [
            s
            for s in samples
            if "LIDAR_TOP" in self.key_data.get(s["token"], {})
            and (wanted is None or self.tables["scene"][s["scene_token"]]["name"] in wanted)
        ]
        self.cameras = cameras
        self.sweep_window = sweep_window
        self.load_images = load_images
        self.intensity_scale = intensity_scale
        self.seed = seed

    def _split_scenes(self, split: str) -> set[str]:
        try:
            from nuscenes.utils.splits import create_splits_scenes
        except ImportError as exc:
            raise ImportError(
                "split= needs nuscenes-devkit (pip install nuscenes-devkit); or pass scenes="
            ) from exc
        splits = create_splits_scenes(verbose=False)
        if split not in splits:
            raise ValueError(f"unknown nuScenes split {split!r}; known: {sorted(splits)}")
        return set(splits[split])

    def __len__(self) -> int:
        return len(self.samples)

    def _points(self, sd: dict) -> np.ndarray:
        raw = np.fromfile(self.root / sd["filename"], dtype=np.float32).reshape(-1, 5)
        pts = raw[:, :4].copy()
        pts[:, 3] *= self.intensity_scale
        return pts

    def load(self, index: int) -> Sample:
        sample = self.samples[index]
        data = self.key_data[sample["token"]]
        lidar = data["LIDAR_TOP"]
        cs = self.tables["calibrated_sensor"]
        poses = self.tables["ego_pose"]
        lidar_cs, lidar_pose = cs[lidar["calibrated_sensor_token"]], poses[lidar["ego_pose_token"]]
        points = self._points(lidar)
        labels = None
        if lidar["token"] in self.lidarseg:
            fine = np.fromfile(self.root / self.lidarseg[lidar["token"]], dtype=np.uint8)
            if len(fine) != len(points):
                raise ValueError(
                    f"lidarseg of {lidar['token']} has {len(fine)} labels for {len(points)} points"
                )
            labels = self.label_lut[fine]
        cameras = []
        for name in self.cameras:
            if name not in data:
                continue
            sd = data[name]
            c = cs[sd["calibrated_sensor_token"]]
            T = nuscenes_camera_from_lidar(lidar_cs, lidar_pose, c, poses[sd["ego_pose_token"]])
            image = (
                _read_image(self.root / sd["filename"])
                if self.load_images
                else np.zeros((sd["height"], sd["width"], 3), np.uint8)
            )
            cameras.append(CameraFrame(name, image, np.asarray(c["camera_intrinsic"]), T))
        sweeps = [Sweep(points, 0.0, labels)]
        if self.num_sweeps > 1:
            prev, chain = lidar.get("prev", ""), []
            while prev and len(chain) < self.sweep_window:
                chain.append(self.tables["sample_data"][prev])
                prev = chain[-1].get("prev", "")
            # Like the released code: random earlier sweeps out of the window, seeded per sample.
            rng = np.random.default_rng([self.seed, index])
            pick = (
                sorted(rng.choice(len(chain), size=min(self.num_sweeps - 1, len(chain)), replace=False))
                if chain
                else []
            )
            for i in pick:
                sd = chain[i]
                pts = self._points(sd)
                pts = pts[remove_ego_points(pts)]
                reg = register_sweep(
                    pts,
                    nuscenes_record_transform(poses[sd["ego_pose_token"]]),
                    nuscenes_record_transform(cs[sd["calibrated_sensor_token"]]),
                    nuscenes_record_transform(lidar_pose),
                    nuscenes_record_transform(lidar_cs),
                )
                sweeps.append(Sweep(reg, (lidar["timestamp"] - sd["timestamp"]) * 1e-6))
        return Sample(
            sample["token"],
            self.name,
            points,
            labels,
            cameras,
            sweeps,
            # LIDAR_TOP (x right, y forward) -> ego, whose origin is the rear axle centre on the ground
            meta={"lidar_token": lidar["token"], "timestamp": sample["timestamp"],
                  "base_from_lidar": nuscenes_record_transform(lidar_cs)},  # fmt: skip
        )
