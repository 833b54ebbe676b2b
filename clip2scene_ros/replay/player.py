"""Play a rosbag2 into a segment_node, collect its labelled clouds, and evaluate them.

The messages go out as the bag's raw CDR bytes (``Publisher.publish(bytes)``), so the node sees
exactly what was recorded. Two pacings: real time (times ``rate``) from the bag's time stamps, or
``rate=None`` ("max"): each cloud waits for its labelled output before the next is sent, the
fastest pace the node keeps up with. Ground truth never goes over DDS: it is read from the bag
and matched to the node's outputs by header stamp (same point order by contract).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clip2scene_ros.evaluation.metrics import ConfusionMatrix, LabelMapping, latency_summary, resolve_label_mapping
from clip2scene_ros.evaluation.report import BevFrame, QueryPlot, write_report
from clip2scene_ros.replay import bag as B
from clip2scene_ros.replay.offline import gt_taxonomy_of

STARTUP_TIMEOUT_S = 120.0  # node start on 2 shared cores: ROS bootstrap + torch + models + warm-up


class ReplayError(RuntimeError):
    """The replay could not run (node did not start, never answered, bad options)."""


@dataclass
class NodeOptions:
    """How to start segment_node (ignored when ``connect`` names a running node)."""

    checkpoint: str | None = None
    teacher: str | None = None
    vocabulary: str | None = None
    backend: str | None = None
    device: str | None = None
    config: str | None = None
    namespace: str = ""
    params: list[str] = field(default_factory=list)  # NAME:=VALUE
    connect: str | None = None  # fully-qualified node name of a running node, e.g. /robot1/segment_node


@dataclass
class ReplayOptions:
    bag: str | Path
    rate: float | None = None  # None = as fast as the node keeps up
    lidar_topic: str = B.LIDAR_TOPIC
    label_topic: str = B.LABEL_TOPIC
    cameras: list[str] = field(default_factory=list)  # also publish these cameras
    gt_taxonomy: str | None = None
    class_map: str | None = None
    max_frames: int = 0
    frame_timeout: float = 30.0
    queries: list[str] = field(default_factory=list)
    query_top_k: int = 0
    query_threshold: float = 0.0
    progress: bool = True
    node: NodeOptions = field(default_factory=NodeOptions)


@dataclass
class ReplayResult:
    options: ReplayOptions
    info: B.BagInfo
    sent: int
    received: int
    latencies_ms: list[float]
    wall_s: float
    node_name: str
    vocabulary: str
    legend: dict
    node_drops: int | None
    confusion: ConfusionMatrix | None
    mapping: LabelMapping | None
    labels: dict[int, np.ndarray]  # header stamp -> label ids from the node
    bev: BevFrame | None
    queries: list[dict]
    query_plots: list[QueryPlot]

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def summary(self) -> dict:
        o = self.options
        seg = None
        if self.confusion is not None:
            # mIoU covers the frames that came back; the ones that did not are counted, not hidden
            seg = {**self.confusion.to_dict(), "frames": self.gt_frames, "frames_with_gt_sent": self.gt_sent,
                   "frames_without_output": self.gt_sent - self.gt_frames}  # fmt: skip
        return {
            "title": "clip2scene replay report",
            "bag": f"{self.info.path} ({self.info.storage}, {self.info.duration_s:.1f} s, "
            f"{self.info.counts.get(o.lidar_topic, 0)} clouds)",
            "node": self.node_name,
            "vocabulary": self.vocabulary,
            "gt_taxonomy": gt_taxonomy_of(self.info, o.gt_taxonomy) if self.confusion is not None else None,
            "label_mapping": self.mapping.how if self.mapping else None,
            "rate": "max (wait for each output)" if o.rate is None else f"{o.rate:g}x real time",
            "frames": {
                "sent": self.sent,
                "received": self.received,
                "lost": self.lost,
                "node_drops": self.node_drops,
                "node_skipped_no_tf": self.node_skipped_no_tf,
                "wall_s": round(self.wall_s, 3),
                "throughput_hz": round(self.received / self.wall_s, 3) if self.wall_s > 0 else None,
            },
            "latency_ms": latency_summary(self.latencies_ms),
            "segmentation": seg,
            "queries": self.queries,
        }

    gt_frames: int = 0  # frames with ground truth whose labels came back (the mIoU's frames)
    gt_sent: int = 0  # frames with ground truth that were sent
    node_skipped_no_tf: int | None = None  # clouds the node skipped: no transform into its base frame

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        return write_report(
            out_dir, self.summary(), confusion=self.confusion, latencies_ms=self.latencies_ms,
            bev=self.bev, queries=self.query_plots,
        )  # fmt: skip


def _msg_class(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as e:
        raise ReplayError(f"message type {msgtype} is not installed in this ROS environment ({e})") from None


def _node_command(n: NodeOptions, lidar_topic: str, queue_size: int) -> list[str]:
    cmd = [sys.executable, "-m", "clip2scene_ros.cli.main", "segment"]
    for name in ("checkpoint", "teacher", "vocabulary", "backend", "device", "config"):
        v = getattr(n, name)
        if v:
            cmd += [f"--{name}", str(v)]
    if n.namespace:
        cmd += ["--namespace", n.namespace]
    # Replay is loss-free transport: reliable input, so drops measure the node's queue only.
    base = [f"input_topic:={lidar_topic}", "qos.reliability:=reliable", "qos.depth:=10", f"queue_size:={queue_size}"]
    for p in base + list(n.params):
        cmd += ["-p", p]
    return cmd


class _Participant:
    """The replay's own rclpy node: raw publishers, the labels/legend/diagnostics subscriptions."""

    def __init__(self, node_name: str, on_labels) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import String

        from clip2scene_interfaces.srv import QueryText

        # An own context: ROS_DOMAIN_ID is read now, not whenever rclpy was first initialised.
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(f"clip2scene_replay_{os.getpid()}_{time.monotonic_ns() % 10**6}", context=self.context)
        self.reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.tf = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)  # as tf2's broadcaster
        self.latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.publishers: dict[str, object] = {}
        self.legend: dict | None = None
        self.diag: dict[str, str] = {}
        self.node_name = node_name.rstrip("/")
        ns = self.node_name.rsplit("/", 1)[0]
        self.labels_topic = f"{self.node_name}/labels"
        self.node.create_subscription(PointCloud2, self.labels_topic, on_labels, QoSProfile(depth=100))
        self.node.create_subscription(String, f"{self.node_name}/legend", self._on_legend, self.latched)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.query_client = self.node.create_client(QueryText, f"{ns}/query_text")
        self.QueryText = QueryText
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running and self.context.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def _on_legend(self, msg) -> None:
        self.legend = json.loads(msg.data)

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.hardware_id == self.node_name:
                self.diag = {kv.key: kv.value for kv in st.values}

    def publisher(self, topic: str, msgtype: str):
        if topic not in self.publishers:
            qos = self.latched if topic == "/tf_static" else self.tf if topic == "/tf" else self.reliable
            self.publishers[topic] = self.node.create_publisher(_msg_class(msgtype), topic, qos)
        return self.publishers[topic]

    def query(self, text: str, top_k: int, threshold: float, timeout: float = 30.0):
        future = self.query_client.call_async(
            self.QueryText.Request(text=text, threshold=float(threshold), top_k=int(top_k))
        )
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            raise ReplayError(f"no answer to query '{text}' within {timeout:.0f} s")
        return future.result()

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def _skipped_no_tf(part: _Participant) -> int:
    """The node's count of clouds skipped for want of a transform into its base frame (/diagnostics)."""
    value = part.diag.get("frames_skipped_no_tf", "0")
    return int(value) if value.isdigit() else 0


def _wait(pred, timeout: float, what: str, proc=None) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.proc.poll() is not None:
            raise ReplayError(f"segment_node exited with {proc.proc.returncode} while {what}; log:\n"
                              f"{proc.log()[-3000:]}")  # fmt: skip
        if time.monotonic() > end:
            tail = f"; node log:\n{proc.log()[-2000:]}" if proc is not None else ""
            raise ReplayError(f"timed out after {timeout:.0f} s {what}{tail}")
        time.sleep(0.02)


def _drain(count, target: int, timeout: float, proc, idle: float = 3.0) -> None:
    """Wait for the outputs still in flight: until all arrived or nothing came for ``idle`` s."""
    end = time.monotonic() + max(timeout, idle) * max(target, 1)
    last, last_change = count(), time.monotonic()
    while count() < target and time.monotonic() < end and time.monotonic() - last_change < idle:
        if proc is not None and proc.proc.poll() is not None:
            raise ReplayError(f"segment_node exited with {proc.proc.returncode}; log:\n{proc.log()[-3000:]}")
        time.sleep(0.02)
        if count() != last:
            last, last_change = count(), time.monotonic()


def replay(opts: ReplayOptions) -> ReplayResult:
    """Play ``opts.bag`` into segment_node (started here unless ``opts.node.connect``) and evaluate."""
    from clip2scene_ros.nodes import conversions as conv
    from clip2scene_ros.nodes.node_process import NodeProcess
    from clip2scene_ros.resources import configure_ros_environment

    configure_ros_environment()
    info = B.inspect_bag(opts.bag)
    info.require_cloud(opts.lidar_topic)
    gt = B.read_labels(info.path, opts.label_topic) if opts.label_topic in info.topics else {}
    topics = [opts.lidar_topic]
    for cam in opts.cameras:
        for t in (f"/camera/{cam}/image_raw", f"/camera/{cam}/camera_info"):
            if t not in info.topics:
                raise ReplayError(f"{info.path} has no topic {t} for camera '{cam}'")
            topics.append(t)
    topics += [t for t in B.TF_TOPICS if t in info.topics]  # camera extrinsics, a base-frame model's mounting
    B.verify(info.path, topics)
    n_clouds = info.counts[opts.lidar_topic]
    if opts.max_frames:
        n_clouds = min(n_clouds, opts.max_frames)

    proc = None
    if opts.node.connect:
        node_name = opts.node.connect
    else:
        ns = "/" + opts.node.namespace.strip("/") if opts.node.namespace.strip("/") else ""
        node_name = f"{ns}/segment_node"
        queue = max(2, n_clouds) if opts.rate is None else 2
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = NodeProcess(_node_command(opts.node, opts.lidar_topic, queue), env)

    lock = threading.Lock()
    sent_at: dict[int, tuple[int, float]] = {}  # stamp -> (frame index, monotonic publish time)
    received: dict[int, float] = {}
    labels_out: dict[int, np.ndarray] = {}
    state: dict = {"conf": None, "mapping": None, "bev": None, "last": None, "gt_frames": 0}
    bev_index = n_clouds // 2

    def on_labels(msg) -> None:
        t_rx = time.monotonic()
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        with lock:
            if stamp not in sent_at or stamp in received:
                return  # someone else's frame, or a duplicate
            received[stamp] = t_rx
            index = sent_at[stamp][0]
        arr = conv.cloud_to_array(msg)
        lab = arr["label"].astype(np.int64)
        labels_out[stamp] = lab
        xyz = np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float32)
        mapping = state["mapping"]
        if mapping is not None and stamp in gt and len(gt[stamp]) == len(lab):
            state["conf"].update(mapping(lab), gt[stamp])
            state["gt_frames"] += 1
        state["last"] = (stamp, xyz)
        if index == bev_index:
            state["bev"] = (stamp, xyz, lab)

    part = None
    try:
        if proc is not None:
            proc.wait_for_log(r"listening on", STARTUP_TIMEOUT_S)
        part = _Participant(node_name, on_labels)
        lidar_pub = part.publisher(opts.lidar_topic, B.CLOUD_TYPE)
        for t in topics[1:]:
            part.publisher(t, info.topics[t])
        _wait(
            lambda: lidar_pub.get_subscription_count() > 0
            and part.node.count_publishers(part.labels_topic) > 0
            and part.legend is not None,
            STARTUP_TIMEOUT_S if proc is None else 60.0,
            f"waiting for {node_name} (subscribed to {opts.lidar_topic}, publishing labels and a legend)",
            proc,
        )
        legend = part.legend
        try:  # the node's counters before this replay (a running node may have skipped clouds before)
            _wait(lambda: bool(part.diag), 3.0, "for diagnostics")
        except ReplayError:
            pass
        skipped_before = _skipped_no_tf(part)
        vocab_name = legend.get("vocabulary", "?")
        classes = [(int(c["id"]), c["name"]) for c in legend["classes"]]
        if gt:
            mapping = resolve_label_mapping(vocab_name, classes, gt_taxonomy_of(info, opts.gt_taxonomy),
                                            opts.class_map)  # fmt: skip
            state["mapping"] = mapping
            state["conf"] = ConfusionMatrix(mapping.gt_names)

        store = B.typestore()
        bar = None
        if opts.progress:
            from tqdm import tqdm

            bar = tqdm(total=n_clouds, desc="replay", unit="frame", leave=False)
        t_start = time.monotonic()
        first_bag_t = None
        n_sent = 0
        messages = B.iter_raw(info.path, topics)
        if opts.rate is None:  # each cloud waits for its labels: send the poses the node may wait for first
            messages = B.clouds_after_transforms(messages, opts.lidar_topic)
        for topic, msgtype, t_bag, raw in messages:
            if first_bag_t is None:
                first_bag_t = t_bag
            if opts.rate is not None:  # real time: hold each message until its bag time
                due = t_start + (t_bag - first_bag_t) / 1e9 / opts.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if topic != opts.lidar_topic:
                part.publisher(topic, msgtype).publish(raw)
                continue
            stamp = B.header_stamp_ns(B.deserialize(raw, msgtype, store))
            with lock:
                sent_at[stamp] = (n_sent, time.monotonic())
            skipped = _skipped_no_tf(part)
            lidar_pub.publish(raw)
            n_sent += 1
            if opts.rate is None:  # a cloud skipped for want of a transform never comes back: diagnostics say so
                done = lambda s=stamp, k=skipped: s in received or _skipped_no_tf(part) > k  # noqa: E731
                try:
                    _wait(done, opts.frame_timeout, f"for the labels of frame {n_sent}", proc)
                except ReplayError:
                    if proc is not None and proc.proc.poll() is not None:
                        raise
            if bar is not None:
                bar.update(1)
            if n_sent >= n_clouds:
                break
        # real-time mode: give the node time to finish what is queued (lost frames stay lost)
        answered = lambda: len(received) + _skipped_no_tf(part) - skipped_before  # noqa: E731 - skipped: no output
        _drain(answered, n_sent, opts.frame_timeout, proc, idle=opts.frame_timeout)
        t_end = max(received.values(), default=time.monotonic())
        if bar is not None:
            bar.close()
        with lock:
            latencies = [(received[s] - sent_at[s][1]) * 1e3 for s in sent_at if s in received]
        # the node's own drop counter, from a /diagnostics message sent after the last output
        try:
            _wait(lambda: int(part.diag.get("frames_out", -1)) >= len(received), 3.0, "for diagnostics")
        except (ReplayError, ValueError):
            pass
        drops = part.diag.get("drops")

        queries, plots = [], []
        if opts.queries and state["last"] is not None:
            stamp, xyz = state["last"]
            for text in opts.queries:
                res = part.query(text, opts.query_top_k, opts.query_threshold)
                scores = np.full(len(xyz), -1.0, dtype=np.float32)
                idx = np.asarray(res.indices, dtype=np.int64)
                scores[idx] = np.asarray(res.scores, dtype=np.float32)
                queries.append({
                    "text": text, "success": bool(res.success), "matches": len(idx),
                    "best": float(max(res.scores)) if len(res.scores) else None,
                    "instances": len(res.instance_centroids), "message": res.message,
                })  # fmt: skip
                plots.append(QueryPlot(text, xyz, scores, idx, res.message))

        names = {int(c["id"]): c["name"] for c in legend["classes"]}
        bev = None
        pick = state["bev"] or (state["last"] and (state["last"][0], state["last"][1], labels_out[state["last"][0]]))
        if pick:
            stamp, xyz, lab = pick
            gt_panel, gt_names = None, None
            if stamp in gt and state["mapping"] is not None:
                gt_panel = gt[stamp]
                gt_names = {i + 1: n for i, n in enumerate(state["mapping"].gt_names)}
            bev = BevFrame(xyz, lab, names, f"prediction ({vocab_name})", gt_panel, gt_names)
        result = ReplayResult(
            options=opts, info=info, sent=n_sent, received=len(received), latencies_ms=latencies,
            wall_s=t_end - t_start, node_name=node_name, vocabulary=vocab_name, legend=legend,
            node_drops=int(drops) if drops is not None else None, confusion=state["conf"],
            mapping=state["mapping"], labels=labels_out, bev=bev, queries=queries, query_plots=plots,
        )  # fmt: skip
        result.gt_frames = state["gt_frames"]
        result.gt_sent = sum(1 for s in sent_at if s in gt)
        if "frames_skipped_no_tf" in part.diag:  # a node of this version
            result.node_skipped_no_tf = _skipped_no_tf(part) - skipped_before
        return result
    finally:
        if part is not None:
            part.close()
        if proc is not None:
            proc.stop()
