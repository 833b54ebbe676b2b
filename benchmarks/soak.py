"""Does segment_node survive hours of traffic, hostile input and endless new query phrases?

A real node process (the shipped default student and teacher) gets the held-out synthetic drive in a
loop at 10 Hz while a client sends a new, never-seen phrase to /query_text every 0.5 s and a
bad-input message every 5 s (cycling through the bad-input matrix: empty cloud, cloud without x/y/z,
NaN/Inf points, points far beyond the voxel hash range, a big-endian cloud, a cloud larger than
max_points, a time jump backwards, an empty / over-long / NaN-threshold query). The node's resident
memory (its whole process tree) is sampled every second: anonymous RSS (heap, where a leak shows)
and all RSS (file-backed pages too, which come and go with the machine's memory pressure).

rss_growth_pct compares the mean RSS of the last minute with the first minute after a one-minute
warm-up (shorter runs scale both windows to a third of the run). Targets for a 10-minute run: growth
< 5 %, no crash, every query answered (an answer may be a refusal such as the rate limit: what
counts as an error is no answer at all).

Usage: python benchmarks/soak.py --minutes 10 [--rate 10] [--phrase-period 0.5] [--bad-period 5]
Ends with one JSON line: rss_growth_pct, crashes, frames_in, frames_out, queries, query_errors, ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ADJECTIVES = ["red", "small", "parked", "distant", "wet", "old", "tall", "broken", "shiny", "white", "dark", "empty"]
NOUNS = ["car", "tree", "sign", "bench", "truck", "wall", "person", "bicycle", "pole", "fence", "box", "door"]


def phrases():
    """Endless distinct phrases (a number keeps them distinct after the word combinations run out)."""
    for i in itertools.count():
        a, n = ADJECTIVES[i % len(ADJECTIVES)], NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]
        yield f"a {a} {n} {i}"


def tree_rss_bytes(pid: int, field: str = "RssAnon") -> int:
    """Resident memory of a process and its children (from /proc; 0 once it is gone).

    ``RssAnon`` (heap and other private memory) by default: a leak shows there, while file-backed
    pages (libraries, mapped weights) come and go with the machine's memory pressure.
    """
    total = 0
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total + sum(tree_rss_bytes(int(k), field) for k in kids)


class Client:
    """A minimal rclpy participant: publishes clouds, counts labelled outputs, calls /query_text."""

    def __init__(self, ns: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        from clip2scene_interfaces.srv import QueryText

        self.QueryText = QueryText
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("soak_client", context=self.context)
        self.pub = self.node.create_publisher(
            PointCloud2, f"{ns}/points", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.frames_out = 0
        self.node.create_subscription(PointCloud2, f"{ns}/segment_node/labels", self._on_labels, 10)
        self.client = self.node.create_client(QueryText, f"{ns}/query_text")
        self._exec = SingleThreadedExecutor(context=self.context)
        self._exec.add_node(self.node)
        self._running = True
        self._spin = threading.Thread(target=self._spinner, daemon=True)
        self._spin.start()

    def _spinner(self) -> None:
        while self._running and self.context.ok():
            self._exec.spin_once(timeout_sec=0.05)

    def _on_labels(self, _msg) -> None:
        self.frames_out += 1

    def ready(self) -> bool:
        return self.pub.get_subscription_count() > 0 and self.client.service_is_ready()

    def query(self, text: str, threshold: float = 0.0, timeout: float = 30.0):
        future = self.client.call_async(self.QueryText.Request(text=text, threshold=threshold, top_k=0))
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        return future.result() if done.wait(timeout) else None

    def close(self) -> None:
        self._running = False
        self._spin.join(5)
        self._exec.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def bad_inputs(header_for, frame_points):
    """name -> callable(stamp_ns) returning a PointCloud2 (or None for query cases)."""
    from sensor_msgs.msg import PointCloud2, PointField

    from clip2scene_ros.nodes import conversions as conv

    def empty(t):
        return conv.xyz_cloud(header_for(t), np.zeros((0, 4), np.float32))

    def no_xyz(t):
        return conv.array_to_cloud(header_for(t), np.zeros(100, dtype=[("a", "<f4"), ("b", "<f4")]))

    def nan_points(t):
        pts = frame_points().copy()
        pts[::10, 0] = np.nan
        pts[1::10, 2] = np.inf
        return conv.xyz_cloud(header_for(t), pts)

    def far_points(t):
        pts = frame_points().copy()
        pts[::50, :2] = 1e7
        return conv.xyz_cloud(header_for(t), pts)

    def big_endian(t):
        pts = frame_points()
        arr = np.zeros(len(pts), dtype=[("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("intensity", ">f4")])
        for i, n in enumerate(("x", "y", "z", "intensity")):
            arr[n] = pts[:, i]
        msg = PointCloud2(header=header_for(t), height=1, width=len(arr), is_bigendian=True, point_step=16)
        msg.row_step = 16 * len(arr)
        msg.fields = [PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate(arr.dtype.names)]
        msg.data = arr.tobytes()
        return msg

    def oversized(t):
        pts = np.tile(frame_points(), (10, 1))
        pts[:, :3] += np.random.default_rng(0).normal(0, 0.02, (len(pts), 3)).astype(np.float32)
        return conv.xyz_cloud(header_for(t), pts)

    def backwards(t):
        return conv.xyz_cloud(header_for(t - 10_000_000_000), frame_points())

    return {
        "empty_cloud": empty, "no_xyz": no_xyz, "nan_points": nan_points, "far_points": far_points,
        "big_endian": big_endian, "oversized": oversized, "time_backwards": backwards,
        "empty_query": None, "long_query": None, "nan_threshold": None,
    }  # fmt: skip


def growth(samples: list[tuple[float, int]], duration_s: float) -> tuple[float, float, float]:
    """(growth %, first-window MB, last-window MB) of RSS samples (t, bytes)."""
    window = min(60.0, duration_s / 3)
    warm = window
    first = [r for t, r in samples if warm <= t < warm + window]
    last = [r for t, r in samples if t >= duration_s - window]
    if not first or not last:
        return float("nan"), float("nan"), float("nan")
    a, b = float(np.mean(first)), float(np.mean(last))
    return (b - a) / a * 100, a / 2**20, b / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=10.0, help="LiDAR frames per second")
    ap.add_argument("--phrase-period", type=float, default=0.5)
    ap.add_argument("--bad-period", type=float, default=5.0)
    ap.add_argument("--frames", type=int, default=20, help="distinct frames of the drive, looped")
    ap.add_argument("--threads", type=int, default=1, help="the node's torch threads")
    ap.add_argument("--checkpoint", help="student (default: the shipped one)")
    args = ap.parse_args(argv)

    from clip2scene_ros.resources import configure_ros_environment

    configure_ros_environment()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
    try:
        from clip2scene_ros.nodes.node_process import NodeProcess
    except ImportError:  # before the node's helpers were split out
        from clip2scene_ros.nodes.node_process import NodeProcess
    from std_msgs.msg import Header

    from clip2scene_ros.nodes import conversions as conv
    from clip2scene_ros.nodes.parameters import sim_lidar_params
    from clip2scene_ros.sim import SimConfig, generate_sequence
    from clip2scene_ros.sim.splits import split_seeds

    print(f"simulating {args.frames} frames ...", flush=True)
    frames = [f.points.astype(np.float32) for f in generate_sequence(
        SimConfig.default(), split_seeds("test", 1)[0], args.frames, cameras=False)]  # fmt: skip
    ns = "/soak"
    cmd = [sys.executable, "-m", "clip2scene_ros.cli.main", "segment", "--namespace", ns,
           "-p", "input_topic:=points", "-p", f"num_threads:={args.threads}"]  # fmt: skip
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    cmd += [a for p in sim_lidar_params(args.checkpoint) for a in ("-p", p)]  # clouds without TF
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"soak_text_cache_{os.getpid()}"
    env = {**os.environ, "CLIP2SCENE_CACHE_DIR": str(cache)}  # a fresh cache: its bound is part of the test
    proc = NodeProcess(cmd, env)
    proc.wait_for_log(r"listening on", 180.0)
    client = Client(ns)
    end = time.monotonic() + 60
    while not client.ready():
        if time.monotonic() > end:
            raise TimeoutError("the node's topics and service did not come up")
        time.sleep(0.1)

    stats = {"frames_in": 0, "queries": 0, "answered": 0, "refused": 0, "query_errors": 0, "bad_inputs": 0}
    stop = threading.Event()
    t_ns = [1_700_000_000_000_000_000]
    counter = itertools.count()

    def header_for(t):
        h = Header(frame_id="lidar_top")
        h.stamp.sec, h.stamp.nanosec = divmod(int(t), 1_000_000_000)
        return h

    bad = bad_inputs(header_for, lambda: frames[next(counter) % len(frames)])
    bad_names = itertools.cycle(list(bad))

    stats_lock = threading.Lock()

    def ask(text: str, threshold: float = 0.0) -> None:
        with stats_lock:
            stats["queries"] += 1
        res = client.query(text, threshold)
        key = "query_errors" if res is None else "answered" if res.success else "refused"
        with stats_lock:
            stats[key] += 1

    askers: list[threading.Thread] = []

    def query_loop() -> None:
        # each phrase is sent on time, whether or not earlier answers have come back
        words = phrases()
        nxt = time.monotonic()
        while not stop.is_set():
            t = threading.Thread(target=ask, args=(next(words),), daemon=True)
            t.start()
            askers.append(t)
            askers[:] = [a for a in askers if a.is_alive()]
            nxt += args.phrase_period
            stop.wait(max(0.0, nxt - time.monotonic()))

    rss: list[tuple[float, int]] = []  # anonymous resident memory (the growth figure)
    rss_total: list[tuple[float, int]] = []  # all resident memory, file-backed pages included
    t0 = time.monotonic()
    duration = args.minutes * 60
    qthread = threading.Thread(target=query_loop, daemon=True)
    qthread.start()
    crashes = 0
    next_frame = next_bad = next_rss = time.monotonic()
    i = 0
    print(f"soak: {args.minutes:g} min, {args.rate:g} Hz clouds, a new phrase every {args.phrase_period} s, "
          f"a bad input every {args.bad_period} s", flush=True)  # fmt: skip
    try:
        while (now := time.monotonic()) - t0 < duration:
            if proc.proc.poll() is not None:
                crashes += 1
                print(f"node exited with {proc.proc.returncode}:\n{proc.log()[-3000:]}", flush=True)
                break
            if now >= next_rss:
                rss.append((now - t0, tree_rss_bytes(proc.proc.pid)))
                rss_total.append((now - t0, tree_rss_bytes(proc.proc.pid, "VmRSS")))
                next_rss += 1.0
                if len(rss) % 60 == 0:
                    print(f"  {len(rss) // 60:3d} min: RSS anon {rss[-1][1] / 2**20:.0f} MB / all "
                          f"{rss_total[-1][1] / 2**20:.0f} MB, in {stats['frames_in']}, "
                          f"out {client.frames_out}, queries {stats['queries']} (refused {stats['refused']}, "
                          f"unanswered {stats['query_errors']})", flush=True)  # fmt: skip
            if now >= next_bad:
                name = next(bad_names)
                stats["bad_inputs"] += 1
                t_ns[0] += 1_000_000
                if bad[name] is not None:
                    client.pub.publish(bad[name](t_ns[0]))
                else:  # query cases, answered with a refusal
                    text = {"empty_query": "", "long_query": "x" * 5000, "nan_threshold": "a car"}[name]
                    threading.Thread(target=ask, args=(text, float("nan") if name == "nan_threshold" else 0.0),
                                     daemon=True).start()  # fmt: skip
                next_bad += args.bad_period
            if now >= next_frame:
                t_ns[0] += int(1e9 / args.rate)
                client.pub.publish(conv.xyz_cloud(header_for(t_ns[0]), frames[i % len(frames)]))
                stats["frames_in"] += 1
                i += 1
                next_frame += 1 / args.rate
            time.sleep(max(0.0, min(next_frame, next_bad, next_rss) - time.monotonic()))
    finally:
        stop.set()
        qthread.join(5)
        for t in list(askers):
            t.join(35)  # a query still unanswered after its timeout counts as an error
        time.sleep(2.0)  # the last outputs
        frames_out = client.frames_out
        client.close()
        alive_at_end = proc.proc.poll() is None
        code = proc.stop()  # a node alive until the end that needs SIGKILL to stop is not a crash
        if not alive_at_end and not crashes:
            crashes += 1
    elapsed = time.monotonic() - t0
    pct, first_mb, last_mb = growth(rss, min(elapsed, duration))
    pct_total, first_total, last_total = growth(rss_total, min(elapsed, duration))
    warnings = sum("WARN" in line for line in proc.lines)
    disk = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0
    load = os.getloadavg()
    print(f"ran {elapsed / 60:.1f} min; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print(
        f"anonymous RSS first window {first_mb:.1f} MB -> last window {last_mb:.1f} MB ({pct:+.2f} %, target < 5 %); "
        f"all RSS {first_total:.1f} -> {last_total:.1f} MB ({pct_total:+.2f} %)"
    )
    print(f"frames in {stats['frames_in']}, out {frames_out}; queries {stats['queries']}: answered "
          f"{stats['answered']}, refused {stats['refused']}, unanswered {stats['query_errors']}; "
          f"bad inputs {stats['bad_inputs']}; node warnings {warnings}; crashes {crashes}; "
          f"text cache on disk {disk / 1024:.0f} KB")  # fmt: skip
    print(json.dumps({
        "rss_growth_pct": round(pct, 3), "crashes": crashes, "frames_in": stats["frames_in"],
        "frames_out": frames_out, "queries": stats["queries"], "query_errors": stats["query_errors"],
        "queries_refused": stats["refused"], "bad_inputs": stats["bad_inputs"], "minutes": round(elapsed / 60, 2),
        "rss_first_mb": round(first_mb, 1), "rss_last_mb": round(last_mb, 1), "text_cache_disk_kb": disk // 1024,
        "rss_total_growth_pct": round(pct_total, 3),
        "load_avg_1m": round(load[0], 2), "threads": args.threads, "exit_code": code,
    }))  # fmt: skip
    return 0 if crashes == 0 and stats["query_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
