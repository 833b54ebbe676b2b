"""``clip2scene prepare``: data-preparation steps before training.

``prepare targets --config CFG`` runs the teacher once over a pre-training dataset and caches the
targets (imports the training package lazily); ``prepare scannet ROOT`` extracts ScanNet's .sens
recordings into frames the loader reads.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

HELP = "prepare training data: teacher targets for pre-training (targets), ScanNet frames from .sens (scannet)"
LOG = logging.getLogger("clip2scene.prepare")


TARGETS_MODULE = "clip2scene_training.prepare_targets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", choices=["targets", "scannet"],
        help="targets: cache the teacher's pre-training targets (--config CFG); scannet: extract .sens recordings",
    )  # fmt: skip
    parser.add_argument("root", nargs="?", help="dataset root (ScanNet: holds scans/<scene>/<scene>.sens)")
    parser.add_argument("--config", help="targets: the pre-training YAML (file or shipped name)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="targets: override a key")
    parser.add_argument("--workers", type=int, help="targets: worker processes (default: targets.workers)")
    parser.add_argument("--no-progress", action="store_true", help="targets: no progress bar")
    parser.add_argument("--scenes", nargs="+", help="only these scenes (default: every scene with a .sens file)")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th frame (ScanNet's 25k set uses 100)")
    parser.add_argument("--overwrite", action="store_true", help="re-extract scenes whose frames/ already exist")


def run(args: argparse.Namespace) -> int:
    if args.dataset == "targets":
        import importlib

        module = importlib.import_module(TARGETS_MODULE)
        args.config = args.config or "pretrain_synthetic"
        return module.run(args)
    if not args.root:
        LOG.error("clip2scene prepare scannet ROOT: give the ScanNet root")
        return 2
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
