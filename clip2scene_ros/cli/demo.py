"""``clip2scene demo --out DIR``: the whole system on the shipped default models, in about two minutes.

1. simulate a short drive of the held-out (test-split) synthetic world and write it as a rosbag2;
2. start ``segment_node`` with the default teacher + student and replay the bag into it;
3. ask ``/query_text`` a few phrases about the last frame;
4. write DIR/report.md (+ JSON) with a bird's-eye view of the segmentation, the query pictures,
   per-class IoU against the simulator's ground truth, latency and throughput.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

HELP = "end-to-end demo: synthetic drive -> rosbag2 -> segment_node -> queries -> report with pictures"
log = logging.getLogger("clip2scene.demo")
DEFAULT_QUERIES = ("a parked car", "a tree", "a pedestrian")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_output", help="output folder (report.md, PNGs, the bag)")
    p.add_argument("--frames", type=int, default=6, help="LiDAR frames in the drive")
    p.add_argument("--seed", type=int, help="scene seed (default: the first test-split seed)")
    p.add_argument("--query", action="append", help=f"phrase to ask (repeatable; default {list(DEFAULT_QUERIES)})")
    p.add_argument("--top-k", type=int, default=0,
                   help="points returned per query; 0 = the calibrated answer (relevance >= 0.5)")  # fmt: skip
    p.add_argument("--realtime-rate", type=float, default=1.0,
                   help="also replay the drive at this multiple of real time and report frames lost and "
                   "latency (0 = skip)")  # fmt: skip
    p.add_argument("--checkpoint", help="student checkpoint (default: the shipped clip2scene_ros/assets/student)")
    p.add_argument("--teacher", help="teacher / text encoder (default: the one shipped with the student, "
                   "CHECKPOINT/teacher, else clip2scene_ros/assets/teacher)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE", help="node parameter")
    p.add_argument("--no-progress", action="store_true")


def _paired_teacher(checkpoint: Path) -> str | None:
    """The teacher a student was distilled from, when shipped next to it (``<checkpoint>/teacher``).

    The student's features live in that teacher's text space, so the demo pairs them rather than
    trusting that the default teacher has not been retrained since.
    """
    from clip2scene_ros.teacher.loading import CONFIG_FILENAME

    d = checkpoint / "teacher"
    return str(d) if (d / CONFIG_FILENAME).is_file() else None


def _check_models(args: argparse.Namespace) -> str | None:
    from clip2scene_ros.nodes.parameters import default_checkpoint
    from clip2scene_ros.teacher.loading import ASSET_DIR, CONFIG_FILENAME

    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if not args.teacher:
        args.teacher = _paired_teacher(ckpt)
    if not args.teacher and not (ASSET_DIR / CONFIG_FILENAME).is_file():
        return (f"the shipped default teacher is missing from {ASSET_DIR}; train it with `clip2scene train "
                "teacher` (see its model card) or pass --teacher DIR")  # fmt: skip
    if not (ckpt / "model.safetensors").is_file():
        return (f"no student checkpoint at {ckpt}; make it with `clip2scene train pretrain` (recipe in "
                "clip2scene_ros/assets/student/README.md) or pass --checkpoint DIR")  # fmt: skip
    return None


def run(args: argparse.Namespace) -> int:
    from clip2scene_ros.replay.bag import BagError
    from clip2scene_ros.replay.player import NodeOptions, ReplayError, ReplayOptions, replay
    from clip2scene_ros.sim import SimConfig, generate_sequence
    from clip2scene_ros.sim.splits import split_seeds
    from clip2scene_ros.sim.writers.rosbag import write_rosbag

    t0 = time.perf_counter()
    problem = _check_models(args)
    if problem:
        log.error("%s", problem)
        return 2
    if args.frames < 1:
        log.error("--frames must be >= 1")
        return 2
    # Talk to our own node only: stay on this machine unless the user chose otherwise.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "drive_bag"
    if bag.exists():
        if not (bag / "metadata.yaml").is_file():
            log.error("%s exists and is not a rosbag2 folder from an earlier demo; choose another --out", bag)
            return 2
        shutil.rmtree(bag)  # a previous demo's bag: regenerate it

    seed = split_seeds("test", 1)[0] if args.seed is None else args.seed
    cfg = SimConfig.default().with_overrides(
        **{"cameras.names": ["cam_front"], "cameras.width": 320, "cameras.height": 180}
    )
    frames = generate_sequence(cfg, seed, args.frames)
    if not args.no_progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=args.frames, desc="simulate", unit="frame", leave=False)
    write_rosbag(frames, bag)
    t_sim = time.perf_counter() - t0
    log.info("wrote a %d-frame synthetic drive (seed %d, test split) to %s in %.1f s", args.frames, seed, bag, t_sim)

    opts = ReplayOptions(
        bag=bag, rate=None, queries=list(args.query or DEFAULT_QUERIES), query_top_k=args.top_k,
        progress=not args.no_progress,
        node=NodeOptions(checkpoint=args.checkpoint, teacher=args.teacher, params=list(args.param)),
    )  # fmt: skip
    try:
        result = replay(opts)
    except (ReplayError, BagError, ValueError) as e:
        log.error("%s", e)
        return 1
    summary = result.summary()
    if args.realtime_rate > 0:  # the pace a robot imposes: frames the node cannot keep up with are lost
        try:
            rt = replay(replace(opts, rate=args.realtime_rate, queries=[], progress=False))
        except (ReplayError, BagError, ValueError) as e:
            log.error("real-time replay: %s", e)
            return 1
        rts = rt.summary()
        summary["realtime"] = {"rate": rts["rate"], **rts["frames"], "latency_ms": rts["latency_ms"],
                               "miou": (rts["segmentation"] or {}).get("miou")}  # fmt: skip
    summary["title"] = "clip2scene demo: a synthetic drive through segment_node"
    summary["demo"] = {"seed": seed, "frames": args.frames, "simulate_s": round(t_sim, 1),
                       "total_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    from clip2scene_ros.evaluation.report import write_report

    paths = write_report(out, summary, confusion=result.confusion, latencies_ms=result.latencies_ms,
                         bev=result.bev, queries=result.query_plots)  # fmt: skip
    total = time.perf_counter() - t0
    seg = summary["segmentation"] or {}
    print(f"demo report: {paths['markdown']}  ({total:.0f} s)")
    for q in summary["queries"]:
        print(f"  query: {q['message']}")
    realtime = summary.get("realtime") or {}
    print(json.dumps({"miou": seg.get("miou"), "frames": result.received, "lost": result.lost,
                      "realtime_lost": realtime.get("lost"), "realtime_miou": realtime.get("miou"),
                      "latency_ms_p50": summary["latency_ms"].get("p50"),
                      "throughput_hz": summary["frames"]["throughput_hz"], "total_s": round(total, 1),
                      "report": str(paths["json"])}))  # fmt: skip
    return 0 if result.received else 1
