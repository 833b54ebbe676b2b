"""``clip2scene sim``: generate synthetic drives and write them as nuScenes, SemanticKITTI or rosbag2."""

from __future__ import annotations

import argparse
import json
import logging
import time

import yaml

HELP = "generate synthetic LiDAR+camera drives with labels (nuScenes, SemanticKITTI or rosbag2 mcap)"
log = logging.getLogger("clip2scene.sim")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (a dataroot, or the bag folder for one rosbag)")
    p.add_argument("--format", choices=("nuscenes", "semantickitti", "rosbag"), default="nuscenes")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="one scene seed (default 0)")
    g.add_argument("--seeds", help="comma-separated scene seeds, e.g. 0,1,2")
    g.add_argument("--split", choices=("train", "val", "test"), help="take seeds from a fixed split")
    p.add_argument("--scenes", type=int, default=1, help="with --split: how many scenes (first N seeds)")
    p.add_argument("--frames", type=int, default=20, help="frames (LiDAR sweeps) per scene")
    p.add_argument("--config", help="simulator YAML (default: config/sim/default.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set lidar.beams=64 (repeatable)",
    )
    p.add_argument("--width", type=int, help="camera image width (px)")
    p.add_argument("--height", type=int, help="camera image height (px)")
    p.add_argument("--beams", type=int, help="LiDAR beams (32 or 64)")
    p.add_argument("--cameras", help="comma-separated camera names (default: all six)")
    p.add_argument("--keyframe-every", type=int, default=2, help="nuScenes: a key frame every N frames")
    p.add_argument("--lead-in", type=int, default=2, help="nuScenes: sweeps before the first key frame")
    p.add_argument("--version", default="v1.0-trainval", help="nuScenes version folder name (v1.0-*)")
    p.add_argument("--preview", metavar="PNG", help="also save a contact sheet of the first seed's first frame")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_config(args: argparse.Namespace):
    from clip2scene_ros.sim import SimConfig

    cfg = SimConfig.from_yaml(args.config) if args.config else SimConfig.default()
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = yaml.safe_load(v)
    if args.width:
        overrides["cameras.width"] = args.width
    if args.height:
        overrides["cameras.height"] = args.height
    if args.beams:
        overrides["lidar.beams"] = args.beams
    if args.cameras:
        overrides["cameras.names"] = [c.strip() for c in args.cameras.split(",") if c.strip()]
    return cfg.with_overrides(**overrides) if overrides else cfg


def run(args: argparse.Namespace) -> int:
    from clip2scene_ros.sim import SimConfigError
    from clip2scene_ros.sim.splits import split_seeds
    from clip2scene_ros.sim.writers import write_dataset

    try:
        cfg = build_config(args)
        if args.split:
            seeds = split_seeds(args.split, args.scenes)
        elif args.seeds:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        else:
            seeds = [0 if args.seed is None else args.seed]
        t0 = time.perf_counter()
        out = write_dataset(
            args.format, args.out, cfg, seeds, args.frames, keyframe_every=args.keyframe_every,
            lead_in=args.lead_in, version=args.version, progress=not args.no_progress,
        )  # fmt: skip
        dt = time.perf_counter() - t0
        if args.preview:
            from clip2scene_ros.sim import generate_sequence
            from clip2scene_ros.sim.preview import save_contact_sheet

            frame = next(generate_sequence(cfg, seeds[0], 1, cameras=True))
            log.info("preview: %s", save_contact_sheet(frame, args.preview))
    except (SimConfigError, ValueError, FileExistsError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    summary = {"format": args.format, "out": str(out), "seeds": seeds, "frames_per_scene": args.frames,
               "seconds": round(dt, 2)}  # fmt: skip
    print(json.dumps(summary))
    return 0
