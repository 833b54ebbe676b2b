"""The synthetic world (``clip2scene_ros.sim``) as a dataset, generated in memory from seeds.

Key frames are every ``key_every``-th frame of each seed's drive (cameras rendered there); the
``num_sweeps - 1`` preceding LiDAR frames are registered into the key frame through the ego poses,
exactly as nuScenes sweeps are. Labels are the synthetic ids of ``config/vocab/synthetic.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from clip2scene_ros.datasets.base import CameraFrame, PairingConfig, PointCloudDataset, Sample, Sweep
from clip2scene_ros.geometry import compose, invert_transform, register_sweep


def synthetic_class_names() -> list[str]:
    from clip2scene_ros.sim import CLASS_NAMES

    names = list(CLASS_NAMES)
    return names[1:] if names and names[0] in ("unlabelled", "unlabeled", "ignore", "sky") else names


class SyntheticDataset(PointCloudDataset):
    name = "synthetic"

    def __init__(
        self,
        split: str = "train",
        num_scenes: int = 2,
        key_frames_per_scene: int = 4,
        key_every: int = 5,
        num_sweeps: int = 1,
        sweep_stride: int = 1,
        sim_config=None,
        seeds: list[int] | None = None,
        pairing: PairingConfig | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        render_cameras: bool = True,
        frame: str = "lidar",
    ):
        super().__init__(pairing, num_sweeps, frame)
        from clip2scene_ros.sim import SimConfig

        if seeds is None:  # the simulator's fixed, disjoint seed splits (config/sim/splits.yaml)
            from clip2scene_ros.sim.splits import split_seeds

            seeds = split_seeds(split, num_scenes)
        self.seeds = list(seeds)
        self.config = sim_config if sim_config is not None else SimConfig.default()
        self.class_names = synthetic_class_names()
        self.key_frames_per_scene = key_frames_per_scene
        self.key_every = key_every
        self.sweep_stride = sweep_stride
        first = (num_sweeps - 1) * sweep_stride
        self.first_key = int(np.ceil(first / key_every) * key_every) if first else 0
        self.index = [(s, self.first_key + k * key_every) for s in self.seeds for k in range(key_frames_per_scene)]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress = progress
        self.render_cameras = render_cameras  # False: LiDAR and labels only (supervised fine-tuning)
        self._frames: dict[int, dict[int, object]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _cache_key(self, seed: int, n: int) -> str:
        blob = json.dumps(self.config.to_dict(), sort_keys=True, default=str) + f"/{seed}/{n}/{self.key_every}"
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def _scene(self, seed: int) -> dict[int, object]:
        if seed in self._frames:
            return self._frames[seed]
        from clip2scene_ros.sim import build_world, generate_sequence

        n = self.first_key + (self.key_frames_per_scene - 1) * self.key_every + 1
        frames = {}
        # One world for the whole drive: a world built for a shorter duration is a different street.
        world = build_world(self.config, seed, duration_s=n / self.config.frame_rate_hz)
        # Only the frames used (frames are independent in time): sweeps LiDAR-only, key frames with
        # their cameras.
        needed = {k for s, k in self.index if s == seed}
        needed_sweeps = {k - j * self.sweep_stride for k in needed for j in range(self.num_sweeps)}
        for k in sorted(needed_sweeps - needed):
            frames[k] = next(iter(generate_sequence(self.config, seed, 1, cameras=False, start_frame=k, world=world)))
        for k in sorted(needed):
            frames[k] = next(
                iter(generate_sequence(self.config, seed, 1, cameras=self.render_cameras, start_frame=k, world=world))
            )
        self._frames[seed] = frames
        return frames

    def load(self, index: int) -> Sample:
        seed, k = self.index[index]
        frames = self._scene(seed)
        key = frames[k]
        points = key.points.astype(np.float32).copy()
        points[:, 3] /= 255.0
        labels = key.labels.astype(np.int64)
        cameras = []
        for cam in key.cameras:
            T = compose(invert_transform(cam.cam_to_ego), key.lidar_to_ego)
            cameras.append(CameraFrame(cam.name, cam.image, cam.K, T, cam.depth, cam.labels))
        sweeps = [Sweep(points, 0.0, labels)]
        for j in range(1, self.num_sweeps):
            f = frames[k - j * self.sweep_stride]
            pts = f.points.astype(np.float32).copy()
            pts[:, 3] /= 255.0
            reg = register_sweep(pts, f.ego_pose, f.lidar_to_ego, key.ego_pose, key.lidar_to_ego)
            sweeps.append(Sweep(reg, (key.timestamp_ns - f.timestamp_ns) * 1e-9, f.labels.astype(np.int64)))
        return Sample(
            f"synthetic/{seed}/{k}",
            self.name,
            points,
            labels,
            cameras,
            sweeps,
            meta={"seed": seed, "frame_index": k, "base_from_lidar": key.lidar_to_ego},
        )
