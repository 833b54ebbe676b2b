"""Pre-rendered synthetic camera images + per-pixel labels for the tiny teacher.

Rendering is the slow part, so a split is rendered once to an ``.npz`` (images uint8 [N,H,W,3],
labels uint8 [N,H,W], provenance [N,3] = seed, frame, camera) and every epoch reads it back.
Only camera images and camera label images are used: never LiDAR labels.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip2scene_ros.teacher.text_cache import default_cache_dir

# The teacher's own scene seeds, far from the sim's 3D train/val/test seeds, so the 2D teacher
# never sees the scenes the 3D student is evaluated on. Held-out teacher validation = VAL_SEEDS.
TRAIN_SEEDS = range(900_000, 900_060)
VAL_SEEDS = range(950_000, 950_008)
FRAMES_PER_SEED = (0, 40, 80, 120)  # frame indices within each drive (4 s apart at 10 Hz)


@dataclass
class RenderSet:
    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray  # uint8 [N, H, W]
    origin: np.ndarray  # int64 [N, 3]: seed, frame, camera index
    path: Path

    def __len__(self) -> int:
        return len(self.images)


def parse_seeds(spec: str) -> range | list[int]:
    """'900000:900060' (half-open range) or '1,2,3'."""
    if ":" in spec:
        a, b = spec.split(":")
        return range(int(a), int(b))
    return [int(s) for s in spec.split(",") if s.strip()]


def default_data_dir() -> Path:
    return default_cache_dir() / "teacher_data"


def _key(seeds, frames, sim_config) -> str:
    payload = json.dumps(
        {"seeds": list(seeds), "frames": list(frames), "sim": sim_config.to_dict() if sim_config else None},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def render_split(
    name: str,
    seeds,
    frames=FRAMES_PER_SEED,
    data_dir: str | os.PathLike | None = None,
    sim_config=None,
    progress: bool = True,
) -> RenderSet:
    """Render (or reuse) ``<data_dir>/<name>-<hash>.npz`` holding every camera of every frame."""
    from clip2scene_ros.sim import SimConfig, build_world, generate_sequence

    cfg = sim_config or SimConfig.default()
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    path = directory / f"{name}-{_key(seeds, frames, cfg)}.npz"
    if path.is_file():
        return load_split(path)
    directory.mkdir(parents=True, exist_ok=True)
    images, labels, origin = [], [], []
    dt = 1.0 / cfg.frame_rate_hz
    seeds = list(seeds)
    try:
        from tqdm import tqdm

        iterator = tqdm(seeds, desc=f"render {name}", unit="scene", disable=not progress)
    except ImportError:
        iterator = seeds
    for seed in iterator:
        duration = max(getattr(cfg.scene, "duration_s", 0.0), (max(frames) + 1) * dt)
        world = build_world(cfg, seed, duration_s=duration)
        for f in frames:
            frame = next(iter(generate_sequence(cfg, seed, 1, world=world, start_frame=f, cameras=True)))
            for ci, cam in enumerate(frame.cameras):
                images.append(cam.image)
                labels.append(cam.labels.astype(np.uint8))
                origin.append((seed, f, ci))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=np.stack(images), labels=np.stack(labels), origin=np.asarray(origin, np.int64))
    os.replace(tmp, path)
    return load_split(path)


def load_split(path: str | os.PathLike) -> RenderSet:
    with np.load(path) as z:
        return RenderSet(z["images"], z["labels"], z["origin"], Path(path))
