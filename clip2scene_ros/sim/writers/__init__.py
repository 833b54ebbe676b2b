"""Dataset writers: nuScenes (devkit layout), SemanticKITTI, rosbag2 (mcap) — and one entry point."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from clip2scene_ros.sim.config import SimConfig
from clip2scene_ros.sim.generate import generate_sequence
from clip2scene_ros.sim.splits import split_of

FORMATS = ("nuscenes", "semantickitti", "rosbag")
log = logging.getLogger(__name__)


def _progress(frames, total: int, desc: str, enabled: bool):
    if not enabled:
        return frames
    from tqdm import tqdm

    return tqdm(frames, total=total, desc=desc, unit="frame", leave=False)


def write_dataset(
    fmt: str,
    out_dir: str | Path,
    config: SimConfig,
    seeds: Sequence[int],
    num_frames: int,
    *,
    keyframe_every: int = 2,
    lead_in: int = 2,
    version: str = "v1.0-trainval",
    progress: bool = True,
) -> Path:
    """Generate ``num_frames`` frames for each seed and write them as ``fmt``. Returns the output path.

    nuscenes: one dataroot with one scene per seed (cameras on key frames only) and
    ``synthetic_splits.json`` (split -> scene names).
    semantickitti: ``sequences/<seed>`` per seed (front camera only).
    rosbag: the bag folder is ``out_dir`` for one seed, ``out_dir/synth-<seed>`` for several.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if not seeds:
        raise ValueError("no seeds given")
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    out = Path(out_dir)
    if fmt == "nuscenes":
        from clip2scene_ros.sim.writers.nuscenes import NuScenesWriter, is_keyframe

        if num_frames <= lead_in:
            raise ValueError(f"nuScenes needs more than lead_in={lead_in} frames for a key frame; got {num_frames}")
        with NuScenesWriter(out, version=version) as writer:
            for seed in seeds:
                frames = generate_sequence(
                    config, seed, num_frames, cameras=lambda i: is_keyframe(i, keyframe_every, lead_in)
                )
                writer.add_scene(
                    _progress(frames, num_frames, f"seed {seed}", progress),
                    seed,
                    keyframe_every=keyframe_every,
                    lead_in=lead_in,
                    description=f"synthetic drive, seed {seed}, split {split_of(seed)}",
                )
        # which scene belongs to which fixed split (the devkit's own splits list real scene names)
        splits: dict[str, list[str]] = {}
        for seed in seeds:
            splits.setdefault(split_of(seed) or "none", []).append(f"synth-{seed:06d}")
        (out / "synthetic_splits.json").write_text(json.dumps(splits, indent=1, sort_keys=True))
        return out
    if fmt == "semantickitti":
        from clip2scene_ros.sim.writers.semantickitti import write_semantickitti_sequence

        cfg = config.with_overrides(**{"cameras.names": list(config.cameras.names[:1])})
        for seed in seeds:
            frames = generate_sequence(cfg, seed, num_frames, cameras=True)
            write_semantickitti_sequence(_progress(frames, num_frames, f"seed {seed}", progress), out, seed)
        return out
    from clip2scene_ros.sim.writers.rosbag import write_rosbag

    for seed in seeds:
        bag = out if len(seeds) == 1 else out / f"synth-{seed:06d}"
        frames = generate_sequence(config, seed, num_frames)
        write_rosbag(_progress(frames, num_frames, f"seed {seed}", progress), bag)
    return out
