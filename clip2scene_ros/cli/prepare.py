"""``clip2scene prepare``: data-preparation steps for datasets whose raw layout the loaders cannot read."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

HELP = "prepare a dataset for training (ScanNet: extract posed colour/depth frames from .sens recordings)"
LOG = logging.getLogger("clip2scene.prepare")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["scannet"], help="which dataset (nuScenes and SemanticKITTI need none)")
    parser.add_argument("root", help="dataset root (ScanNet: holds scans/<scene>/<scene>.sens)")
    parser.add_argument("--scenes", nargs="+", help="only these scenes (default: every scene with a .sens file)")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th frame (ScanNet's 25k set uses 100)")
    parser.add_argument("--overwrite", action="store_true", help="re-extract scenes whose frames/ already exist")


def run(args: argparse.Namespace) -> int:
    from clip2scene_ros.datasets.scannet_sens import SensFormatError, export_frames

    root = Path(args.root)
    scans = root / "scans"
    if not scans.is_dir():
        LOG.error("%s has no scans/ folder; give the ScanNet root (scans/<scene>/<scene>.sens)", root)
        return 2
    scenes = args.scenes or sorted(p.name for p in scans.iterdir() if (p / f"{p.name}.sens").is_file())
    if not scenes:
        LOG.error("no scans/<scene>/<scene>.sens files under %s", root)
        return 2
    summary: dict[str, int | str] = {}
    for scene in scenes:
        sens, out = scans / scene / f"{scene}.sens", root / "frames" / scene
        if (out / "pose").is_dir() and not args.overwrite:
            LOG.info("%s: frames exist, skipped (--overwrite re-extracts)", scene)
            summary[scene] = "skipped"
            continue
        try:
            summary[scene] = export_frames(sens, out, every=args.every, progress=True)
        except (OSError, SensFormatError) as e:  # one bad recording must not stop the others
            LOG.error("%s: %s", scene, e)
            summary[scene] = f"error: {e}"
    print(json.dumps({"prepared": summary}))
    return 1 if any(isinstance(v, str) and v.startswith("error") for v in summary.values()) else 0
