"""``clip2scene replay BAG``: play a rosbag2 into segment_node and write an evaluation report.

Examples::

    clip2scene replay drive_bag --out replay_report                 # start a node, as fast as it keeps up
    clip2scene replay drive_bag --rate 1.0 --connect /segment_node  # real time into a running node
    clip2scene replay nusc_bag --from nuscenes --source /data/nuscenes --version v1.0-mini \\
        --vocabulary nuscenes                                        # convert first, then replay
    clip2scene replay kitti_bag --from semantickitti --source /data/kitti --sequence 08 --convert-only
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from clip2scene_ros.inference.registry import BACKENDS

HELP = "replay a rosbag2 (mcap/sqlite3) through segment_node: mIoU, latency, drops, throughput report"
log = logging.getLogger("clip2scene.replay")


def _rate(value: str) -> float | None:
    if value == "max":
        return None
    try:
        r = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate takes 'max' or a positive factor, got '{value}'") from None
    if not r > 0:
        raise argparse.ArgumentTypeError(f"--rate must be > 0 (1.0 = real time), got {value}")
    return r


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="rosbag2 folder (metadata.yaml + .mcap/.db3); with --from: the bag to create")
    p.add_argument("--out", default="replay_report", help="report folder (report.md, report.json, PNGs)")
    p.add_argument("--rate", type=_rate, default=None, metavar="max|FACTOR",
                   help="'max' (default): each frame waits for its output; a number: bag time x factor")
    p.add_argument("--lidar-topic", default="/lidar/points")
    p.add_argument("--label-topic", default="/lidar/gt_labels", help="ground-truth PointCloud2 with a 'label' field")
    p.add_argument("--cameras", default="", help="comma-separated cameras to publish too (for node fusion)")
    p.add_argument("--gt-taxonomy", help="taxonomy of the label topic (default: the bag's, else synthetic)")
    p.add_argument("--class-map", help="config/class_maps/<NAME>.yaml mapping model ids to ground truth")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N clouds (0 = all)")
    p.add_argument("--frame-timeout", type=float, default=30.0, help="seconds to wait for one output")
    p.add_argument("--query", action="append", default=[], help="after the last frame, ask /query_text (repeatable)")
    p.add_argument("--top-k", type=int, default=0, help="queries return the k best points (0 = threshold)")
    p.add_argument("--threshold", type=float, default=0.0, help="queries: minimum relevance (0: >= 0.5)")
    p.add_argument("--no-progress", action="store_true")
    n = p.add_argument_group("node (started for the replay unless --connect)")
    n.add_argument("--connect", metavar="NODE", help="use a running node, e.g. /segment_node")
    n.add_argument("--checkpoint", help="student checkpoint directory (default: the shipped one)")
    n.add_argument("--teacher", help="teacher (text encoder) name or directory")
    n.add_argument("--vocabulary", help="vocabulary name or YAML path")
    n.add_argument("--backend", choices=BACKENDS)
    n.add_argument("--device")
    n.add_argument("--config", help="node parameter YAML (default config/segment.yaml)")
    n.add_argument("--namespace", default="", help="namespace for the started node")
    n.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE", help="node parameter")
    c = p.add_argument_group("convert a dataset into BAG first")
    c.add_argument("--from", dest="from_format", choices=("nuscenes", "semantickitti"))
    c.add_argument("--source", help="dataset root (nuScenes dataroot, or SemanticKITTI folder with sequences/)")
    c.add_argument("--version", default="v1.0-trainval", help="nuScenes version folder")
    c.add_argument("--scenes", default="", help="nuScenes: comma-separated scene names (default all)")
    c.add_argument("--sequence", default="08", help="SemanticKITTI sequence")
    c.add_argument("--no-images", action="store_true", help="convert without camera images (smaller bag)")
    c.add_argument("--convert-only", action="store_true", help="stop after writing the bag")


def _convert(args: argparse.Namespace) -> None:
    from clip2scene_ros.replay.convert import convert

    if not args.source:
        raise ValueError("--from needs --source DATASET_ROOT")
    kw: dict = {"max_frames": args.max_frames, "cameras": not args.no_images, "progress": not args.no_progress}
    if args.from_format == "nuscenes":
        kw.update(version=args.version, scenes=[s for s in args.scenes.split(",") if s] or None)
    else:
        kw.update(sequence=args.sequence)
    bag = convert(args.from_format, args.source, args.bag, **kw)
    log.info("wrote %s", bag)


def options_from_args(args: argparse.Namespace):
    from clip2scene_ros.replay.player import NodeOptions, ReplayOptions

    node = NodeOptions(
        checkpoint=args.checkpoint, teacher=args.teacher, vocabulary=args.vocabulary, backend=args.backend,
        device=args.device, config=args.config, namespace=args.namespace, params=list(args.param),
        connect=args.connect,
    )  # fmt: skip
    return ReplayOptions(
        bag=args.bag, rate=args.rate, lidar_topic=args.lidar_topic, label_topic=args.label_topic,
        cameras=[c.strip() for c in args.cameras.split(",") if c.strip()], gt_taxonomy=args.gt_taxonomy,
        class_map=args.class_map, max_frames=args.max_frames, frame_timeout=args.frame_timeout,
        queries=list(args.query), query_top_k=args.top_k, query_threshold=args.threshold,
        progress=not args.no_progress, node=node,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from clip2scene_ros.replay.bag import BagError

    try:
        if args.from_format:
            _convert(args)
            if args.convert_only:
                print(json.dumps({"bag": str(Path(args.bag))}))
                return 0
        from clip2scene_ros.replay.player import ReplayError, replay

        try:
            result = replay(options_from_args(args))
        except ReplayError as e:
            log.error("%s", e)
            return 1
    except (BagError, ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        log.error("%s", e)
        return 2
    paths = result.write(args.out)
    s = result.summary()
    seg = s["segmentation"]
    print(f"report: {paths['markdown']}")
    line = {"miou": seg["miou"] if seg else None, "frames_sent": result.sent, "frames_received": result.received,
            "lost": result.lost, "node_drops": result.node_drops, "throughput_hz": s["frames"]["throughput_hz"],
            "latency_ms_p50": s["latency_ms"].get("p50"), "latency_ms_p95": s["latency_ms"].get("p95"),
            "report": str(paths["json"])}  # fmt: skip
    print(json.dumps(line))
    return 0 if result.received else 1
