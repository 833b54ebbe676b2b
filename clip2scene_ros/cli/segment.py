"""``clip2scene segment``: run segment_node where there is no ``ros2 run`` (plain venvs)."""

from __future__ import annotations

import argparse

from clip2scene_ros.inference.registry import BACKENDS

HELP = "run the online segmentation node (segment_node) with config/segment.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="parameter YAML (default: the package's config/segment.yaml)")
    parser.add_argument("--checkpoint", help="student checkpoint directory (overrides the YAML)")
    parser.add_argument("--teacher", help="teacher (text encoder) name or directory")
    parser.add_argument("--vocabulary", help="vocabulary name or YAML path")
    parser.add_argument("--backend", choices=BACKENDS)
    parser.add_argument("--device", help="cpu, cuda or cuda:N")
    parser.add_argument("--namespace", default="", help="ROS namespace of the node, e.g. /robot1")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
        help="any other node parameter, e.g. -p cameras:=[cam_front] -p fusion:=true (repeatable)",
    )  # fmt: skip
    parser.add_argument("--points", default="/lidar/points", help="PointCloud2 topic (remaps ~/input/points)")
    parser.add_argument(
        "--camera-topics", default="/camera/{name}", help="camera topic prefix, {name} = camera (remaps ~/input/...)"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"))


def ros_arguments(args: argparse.Namespace) -> list[str]:
    """The ``--ros-args`` command line equivalent of the options (also used by tests)."""
    from pathlib import Path

    import yaml

    from clip2scene_ros.nodes.parameters import DEFAULT_CAMERA, DEFAULT_POINTS, cameras_in_file, input_remaps
    from clip2scene_ros.resources import config_path

    config = args.config or str(config_path("segment.yaml"))
    # rcl names a node's logger <namespace with dots>.<node name>
    logger = ".".join([*filter(None, args.namespace.strip("/").split("/")), "segment_node"])
    out = ["--ros-args", "--params-file", config, "--log-level", f"{logger}:={args.log_level}"]
    for name in ("checkpoint", "teacher", "vocabulary", "backend", "device"):
        value = getattr(args, name, None)
        if value:
            out += ["-p", f"{name}:={value}"]
    cameras = cameras_in_file(config) if Path(config).is_file() else []
    for item in args.param:
        if ":=" not in item:
            raise SystemExit(f"clip2scene segment: -p expects NAME:=VALUE, got '{item}'")
        out += ["-p", item]
        name, _, value = item.partition(":=")
        if name == "cameras":
            cameras = [str(c) for c in (yaml.safe_load(value) or []) if str(c).strip()]
    # the same remappings as the launch file: ~/input/... onto the driver topics
    for src, dst in input_remaps(cameras, getattr(args, "points", DEFAULT_POINTS),
                                 getattr(args, "camera_topics", DEFAULT_CAMERA)):  # fmt: skip
        out += ["-r", f"{src}:={dst}"]
    if args.namespace:
        out += ["-r", f"__ns:={'/' + args.namespace.lstrip('/')}"]
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.config and not Path(args.config).is_file():
        print(f"clip2scene segment: config file {args.config} does not exist")
        return 2
    from clip2scene_ros.nodes.segment_node import main

    return main(["segment_node", *ros_arguments(args)])
