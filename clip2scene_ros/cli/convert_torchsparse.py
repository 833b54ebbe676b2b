"""``clip2scene convert-torchsparse``: a torchsparse 1.x MinkUNet/SPVCNN ``.pth`` to our checkpoint."""

from __future__ import annotations

import argparse
import json
import logging

HELP = "convert a torchsparse (SpVNAS/CLIP2Scene layout) MinkUNet or SPVCNN .pth into a safetensors checkpoint"
LOG = logging.getLogger("clip2scene.convert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="torchsparse .pth (a state dict, possibly under model_points/state_dict)")
    parser.add_argument("--out", required=True, help="output checkpoint directory (model.safetensors + model.json)")
    parser.add_argument(
        "--voxel-size", type=float, default=0.1, help="voxel size in metres the network was trained with (default 0.1)"
    )
    parser.add_argument(
        "--in-features",
        nargs="+",
        help="names of the input channels (x y z intensity feat<i>); default by count: 1 = intensity, "
        "4 = x y z intensity",
    )
    parser.add_argument(
        "--head",
        default="global",
        help="head name for the classifier (default global: the head the segment node matches against text)",
    )


def run(args: argparse.Namespace) -> int:
    from clip2scene_ros.models import load_checkpoint
    from clip2scene_ros.models.convert import convert_torchsparse_checkpoint

    if args.voxel_size <= 0:
        LOG.error("--voxel-size must be positive, got %s", args.voxel_size)
        return 2
    try:
        out = convert_torchsparse_checkpoint(args.checkpoint, args.out, args.voxel_size, args.in_features, args.head)
    except (FileNotFoundError, ValueError, KeyError) as e:
        LOG.error("%s", e)
        return 2
    _, config, _ = load_checkpoint(out)
    LOG.info("wrote %s (%s, heads %s, %d-d)", out, config.arch, config.heads, config.embed_dim)
    print(json.dumps({"checkpoint": str(out), "arch": config.arch, "config": config.to_dict()}))
    return 0
