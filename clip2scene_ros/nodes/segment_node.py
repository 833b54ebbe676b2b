"""``segment_node``: synchronised LiDAR (+ cameras) in, labelled clouds and text queries out.

Subscribe -> convert -> core -> publish: the segmentation, query selection and camera-input
assembly live in ``clip2scene_ros.inference``; parameters in ``nodes.parameters``.
Threads: the executor runs the subscriptions (which only enqueue), the query service and the
diagnostics timer; one worker thread runs inference, so a slow model never blocks the callbacks.
The frame queue is bounded and drops the OLDEST frame when full (counted in /diagnostics).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, Vector3
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from clip2scene_interfaces.srv import QueryText
from clip2scene_ros.inference import query_selection
from clip2scene_ros.inference.query_selection import add_instances, highlight_colors, select_matches
from clip2scene_ros.inference.relevance import QueryRateLimited, answer_threshold
from clip2scene_ros.inference.segmenter import Segmenter, SegmentResult, palette
from clip2scene_ros.nodes import conversions as conv
from clip2scene_ros.nodes import parameters as params
from clip2scene_ros.nodes.cameras import CameraRig, stamp_ns, subscribe_approximate
from clip2scene_ros.nodes.frame_queue import FrameQueue
from clip2scene_ros.nodes.overlay import OverlayPublisher
from clip2scene_ros.nodes.pipeline_stats import PipelineMonitor, WarningLog
from clip2scene_ros.nodes.query_markers import query_markers
from clip2scene_ros.nodes.transform_buffer import TransformBuffer, subscribe_tf
from clip2scene_ros.resources import HEAP_TRIM_PERIOD_S, configure_ros_environment, fix_malloc_thresholds, trim_heap


@dataclass
class Frame:
    msg: PointCloud2
    receipt: float  # monotonic seconds at arrival
    images: dict[str, tuple[Any, int]] | None = None  # pre-synchronised (approximate_time policy)


class SegmentNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("segment_node", **kwargs)
        self._log = WarningLog(self.get_logger().warning)
        self.p = params.declare(self)
        errors = params.validate(self.p)
        if errors:
            raise ValueError("invalid segment_node parameters:\n  - " + "\n  - ".join(errors))
        params.describe_ranges(self)
        extrinsics = params.declare_extrinsics(self, self.p["cameras"])

        if self.p["num_threads"] > 0:
            import torch

            torch.set_num_threads(int(self.p["num_threads"]))
        t0 = time.perf_counter()
        self.segmenter = Segmenter.from_config(params.segmenter_config(self.p))
        vocab = self.segmenter.vocabulary
        self.get_logger().info(
            f"model ready in {time.perf_counter() - t0:.1f} s: backend={self.p['backend']} "
            f"device={self.p['device']} checkpoint={params.checkpoint_of(self.p)} "
            f"vocabulary={vocab.name} ({len(vocab.classes)} classes), "
            f"features=x,y,z,{','.join(self.segmenter.feature_fields)}"
        )
        self.base_frame, note = params.base_frame_of(self.p, self.segmenter.input.frame.name)
        if note:
            self.get_logger().info(note)

        # state shared between threads
        self._lock = threading.Lock()
        self._last: tuple[Any, np.ndarray, SegmentResult] | None = None  # header, xyz, result
        self._queue = FrameQueue(int(self.p["queue_size"]))
        self._monitor = PipelineMonitor(self.p["cameras"])
        self._started = time.monotonic()
        self._warned_features: set[tuple[str, ...]] = set()

        sensor_group, service_group, timer_group = (MutuallyExclusiveCallbackGroup() for _ in range(3))
        out_qos = params.qos(self.p["output_qos.reliability"], 5)
        self.pub_labels = self.create_publisher(PointCloud2, self.p["output_topic"], out_qos)
        self.pub_query = self.create_publisher(PointCloud2, self.p["query_result_topic"], out_qos)
        self.pub_markers = self.create_publisher(MarkerArray, self.p["query_markers_topic"], out_qos)
        self.pub_legend = self.create_publisher(String, self.p["legend_topic"], params.qos("reliable", 1, latched=True))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.overlay = OverlayPublisher(self, self.p["cameras"], params.qos("reliable", 1))
        self._publish_legend()

        warn = lambda m: self._warn(m, throttle=True)  # noqa: E731
        used = self.p["fusion"] or self.p["overlay.period"] > 0  # images are kept only when something uses them
        buffer_bytes = int(self.p["camera_buffer_mb"] * 2**20) if used else 0
        self.tf = TransformBuffer(self.p["tf_history_s"])
        self.cameras = CameraRig(self.p["cameras"], self.p["sync.tolerance"], extrinsics, warn, buffer_bytes, self.tf)
        self._subscribe(params.qos(self.p["qos.reliability"], int(self.p["qos.depth"])), sensor_group)
        # Deeper than the default 10 requests: while inference starves the executor for a few seconds,
        # queued queries wait instead of being overwritten (a client would never get an answer).
        self.create_service(QueryText, self.p["query_service"], self._on_query, qos_profile=params.qos("reliable", 100),
                            callback_group=service_group)  # fmt: skip
        self.create_timer(self.p["diagnostics_period"], self._on_diagnostics, callback_group=timer_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._worker = threading.Thread(target=self._work, name="segment-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"listening on {self.resolve_topic_name(self.p['input_topic'])}"
            + (f" + cameras {', '.join(self.p['cameras'])}" if self.p["cameras"] else "")
            + f"; publishing {self.resolve_topic_name(self.p['output_topic'])}; "
            f"service {self.resolve_service_name(self.p['query_service'])}"
        )

    # ---- parameters ---------------------------------------------------------------------------

    def _on_set_parameters(self, changed: list) -> SetParametersResult:
        update = params.runtime_update(self.p, [(prm.name, prm.value) for prm in changed])
        if update.error:
            return SetParametersResult(successful=False, reason=update.error)
        if update.vocabulary is not None:
            # Encoded here, off the inference thread, and swapped in as one object: a frame in flight
            # finishes with the vocabulary it started with, the next one uses the new one.
            t0 = time.perf_counter()
            try:
                changed = self.segmenter.set_vocabulary(update.vocabulary)
            except Exception as e:  # an encoder failure refuses the change, the old vocabulary stays
                return SetParametersResult(successful=False, reason=f"vocabulary: {type(e).__name__}: {e}")
            if changed:
                vocab = update.vocabulary
                self.get_logger().info(
                    f"vocabulary '{vocab.name}' ({len(vocab.classes)} classes) encoded in "
                    f"{(time.perf_counter() - t0) * 1e3:.0f} ms"
                )
                self._publish_legend()
        for cam, m in update.extrinsics.items():
            self.cameras.set_extrinsic(cam, m)
        self.p.update(update.values)
        self.segmenter.fusion_weight = float(self.p["fusion_weight"])
        self.cameras.sync.tolerance_ns = int(self.p["sync.tolerance"] * 1e9)
        return SetParametersResult(successful=True)

    # ---- subscriptions --------------------------------------------------------------------------

    def _subscribe(self, qos: QoSProfile, group: MutuallyExclusiveCallbackGroup) -> None:
        cams = self.p["cameras"]
        img_type = CompressedImage if self.p["camera_transport"] == "compressed" else Image
        if self.p["sync.policy"] == "approximate_time":
            topics = [self._image_topic(cam) for cam in cams]
            inputs = (self.p["input_topic"], topics, img_type, qos, self.p["sync.tolerance"], self.cameras)
            timeout = self.p["camera_timeout"]
            self._approx_sync = subscribe_approximate(self, *inputs, self._on_cloud, self._on_image, timeout)
        else:
            self.create_subscription(PointCloud2, self.p["input_topic"], self._on_cloud, qos, callback_group=group)
            for cam in cams:
                cb = lambda m, c=cam: self._on_image(c, m)  # noqa: E731
                self.create_subscription(img_type, self._image_topic(cam), cb, qos, callback_group=group)
        for cam in cams:
            topic = self.p["camera_info_topic"].format(name=cam)
            cb = lambda m, c=cam: self.cameras.on_info(c, m)  # noqa: E731
            self.create_subscription(CameraInfo, topic, cb, qos, callback_group=group)
        if (cams or self.base_frame) and self.p["use_tf"]:
            missing = [c for c in cams if c not in self.cameras.extrinsics]
            if problem := subscribe_tf(self, self.tf, group, missing, self.base_frame):
                self._warn(problem)

    def _image_topic(self, cam: str) -> str:
        topic = self.p["camera_image_topic"].format(name=cam)
        return topic + "/compressed" if self.p["camera_transport"] == "compressed" else topic

    def _on_cloud(self, msg: PointCloud2, images: dict | None = None) -> None:
        self._monitor.cloud_rate.tick()
        if not self._queue.put(Frame(msg, time.monotonic(), images)):
            self._warn(
                f"inference is slower than the input: dropped the oldest queued frame "
                f"({self._queue.dropped} dropped so far; queue_size={self.p['queue_size']})",
                throttle=True,
            )

    def _on_image(self, cam: str, msg: Any) -> None:
        self._monitor.cam_rates[cam].tick()
        self.cameras.on_image(cam, msg)

    # ---- worker ---------------------------------------------------------------------------------

    def _work(self) -> None:
        trimmed = time.monotonic()
        while self._running:
            try:
                frame = self._queue.get(timeout=0.2)
                if frame is not None:
                    self.process(frame)
                if time.monotonic() - trimmed > HEAP_TRIM_PERIOD_S:  # bounded memory, one slower frame
                    trim_heap()
                    trimmed = time.monotonic()
            except Exception as e:  # keep serving: one bad frame must not stop the node
                self._monitor.failures += 1
                self._warn(f"frame failed: {type(e).__name__}: {e}")
                self.get_logger().debug(traceback.format_exc())

    def process(self, frame: Frame) -> PointCloud2 | None:
        """One cloud -> labelled cloud. Bad input is warned about and skipped."""
        t0, c0 = time.perf_counter(), time.thread_time()
        msg, topic = frame.msg, self.p["input_topic"]
        stamp = stamp_ns(msg.header)
        if (jump := self._monitor.stamp_jump(stamp)) is not None:
            self._warn(f"cloud time stamps went backwards by {jump:.3f} s (bag loop or clock reset?); processing "
                       "it anyway", throttle=True)  # fmt: skip
        base_from_sensor = None  # lidar_pose (in the segmenter) or none: the cloud is in the model's frame
        lidar_frame = self.p["lidar_frame"] or msg.header.frame_id
        if self.base_frame:  # waits here, in the worker: /tf callbacks run on the executor meanwhile
            timeout = self.p["tf_timeout_s"]
            base_from_sensor, why = self.tf.wait_for(self.base_frame, lidar_frame, stamp, timeout)
            if base_from_sensor is None:
                self._monitor.skipped_no_tf += 1
                self._warn(f"cloud skipped: no transform {self.base_frame} <- {lidar_frame} at its stamp within "
                           f"tf_timeout_s={timeout:g} ({why}); publish it on /tf or /tf_static, or set lidar_pose",
                           throttle=True)  # fmt: skip
                return None
        t_tf = time.perf_counter()
        try:
            points, missing = conv.cloud_points(msg, self.segmenter.input)
        except ValueError as e:
            self._warn(f"cloud on {topic} skipped: {e}", throttle=True)
            return None
        if not len(points):
            self._warn(f"empty cloud on {topic}; publishing an empty labelled cloud", throttle=True)
        if missing and missing not in self._warned_features:
            self._warned_features.add(missing)
            self._warn(f"cloud has no {', '.join(missing)} field; the model gets zeros for it")
        t_conv = time.perf_counter()

        cameras, overlay = [], self.p["cameras"] and self.overlay.due(self.p["overlay.period"])
        if self.p["cameras"] and (self.p["fusion"] or overlay):  # images are decoded only when used
            cameras = self.cameras.inputs(stamp, lidar_frame, frame.images)
        t_sync = time.perf_counter()
        if len(points) > self.p["max_points"]:  # warn before the (long) inference, not after
            self._warn(
                f"cloud has {len(points)} points, more than max_points={self.p['max_points']}: segmenting "
                "a random subset, the other points get label 0 (raise max_points to segment all)",
                throttle=True,
            )
        result = self.segmenter.segment(points, cameras if self.p["fusion"] else [], base_from_sensor)
        t_seg = time.perf_counter()
        for message in self._monitor.count_dropped_points(result, self.segmenter.hash_limit_m):
            self._warn(message, throttle=True)
        out = conv.labelled_cloud(msg, result.labels, result.scores, self._packed_palette[result.labels])
        t_post = time.perf_counter()
        self.pub_labels.publish(out)
        t_pub = time.perf_counter()
        if overlay:
            colors = self._palette[result.labels] if self.p["overlay.color"] == "label" else None
            self.overlay.publish(msg.header, cameras, points[:, :3], colors, self.cameras.frame_ids)
        with self._lock:
            self._last = (msg.header, points[:, :3].copy(), result)
        mon = self._monitor
        mon.last_fusion = (len(cameras) if result.num_fused else 0, result.num_fused)
        marks = [("start", t0), ("tf", t_tf), ("decode", t_conv), ("sync", t_sync), ("segment", t_seg),
                 ("build_output", t_post), ("publish", t_pub)]  # fmt: skip
        latency = (time.monotonic() - frame.receipt) * 1e3
        age = (self.get_clock().now().nanoseconds - stamp) / 1e6
        stages = mon.record_frame(marks, result.timings_ms, latency, age, (time.thread_time() - c0) * 1e3)
        self.get_logger().debug(
            f"frame {mon.frames_done}: {result.num_points} pts, cameras={mon.last_fusion[0]} | "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in stages.items())
            + f" | queue wait+total {latency:.1f} ms"
        )
        return out

    # ---- outputs --------------------------------------------------------------------------------

    def _publish_legend(self) -> None:
        vocab = self.segmenter.vocabulary
        # grow-only (a colour depends only on its id): a frame labelled with the previous vocabulary
        # may still be turned into a cloud after the switch
        n = int(self.segmenter.label_ids.max()) if len(vocab.classes) else 0
        self._palette = palette(max(n, len(getattr(self, "_palette", ())) - 1))
        self._packed_palette = conv.pack_rgb(self._palette)  # label -> packed rgb in one gather
        self.pub_legend.publish(String(data=conv.legend_json(vocab, self._palette)))

    def _on_query(self, req: QueryText.Request, res: QueryText.Response) -> QueryText.Response:
        text, cap = (req.text or "").strip(), int(self.p["max_text_length"])
        with self._lock:
            last = self._last
        res.success = False
        res.message = query_selection.request_problem(text, cap, req.threshold) or (
            "" if last is not None else f"no cloud segmented yet; is anything publishing on {self.p['input_topic']}?"
        )
        if res.message:
            return res
        header, xyz, result = last
        res.header = header
        try:
            t0 = time.perf_counter()
            sim = self.segmenter.relevance(text, result)
        except QueryRateLimited as e:
            res.message = str(e)
            return res
        except Exception as e:
            res.message = f"query failed: {type(e).__name__}: {e}"
            return res
        threshold = answer_threshold(req.threshold, int(req.top_k))
        sel = select_matches(sim, result.indices, threshold, int(req.top_k), int(self.p["query.max_results"]),
                             score_name="relevance")  # fmt: skip
        if self.p["query.instances"]:
            add_instances(sel, xyz, self.p["query.cluster_radius"], self.p["query.min_cluster_points"])
        self.pub_markers.publish(query_markers(header, text, sel.centroids, sel.sizes))
        res.indices = sel.indices.astype(np.uint32).tolist()
        res.scores = sel.scores.tolist()
        res.instance_centroids = [Point(x=float(c[0]), y=float(c[1]), z=float(c[2])) for c in sel.centroids]
        res.instance_sizes = [Vector3(x=float(s[0]), y=float(s[1]), z=float(s[2])) for s in sel.sizes]
        colors, match = highlight_colors(len(xyz), sim, sel.indices)
        extra = {"score": sim.astype(np.float32), "match": match, "rgb": conv.pack_rgb(colors)}
        self.pub_query.publish(conv.xyz_cloud(header, xyz, extra))
        res.success = True
        res.message = (sel.describe(text, len(sim), bool(self.p["query.instances"]))
                       + f"; {(time.perf_counter() - t0) * 1e3:.1f} ms")  # fmt: skip
        return res

    def _on_diagnostics(self) -> None:
        now, cams = time.monotonic(), []
        if self.p["cameras"] and now - self._started > self.p["camera_timeout"]:
            for cam, age in self.cameras.sync.silent_cameras(self.p["camera_timeout"], now).items():
                what = "never published" if age is None else f"silent for {age:.1f} s"
                if self._monitor.cloud_rate.rate(now) > 0:  # only worth a warning while LiDAR frames arrive
                    self._warn(f"camera '{cam}' {what} ({self._image_topic(cam)}); segmenting without it", True)
                cams.append(f"camera {cam} {what}")
        alive = self._worker.is_alive() or not self._running
        level, problems, kv = self._monitor.report(now, self._queue, alive, cams, self.p["max_latency_ms"], self._log)
        name = f"{self.get_name()}: segmentation pipeline"
        stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(conv.diagnostics(stamp, level, name, self.get_fully_qualified_name(), problems, kv))

    def _warn(self, message: str, throttle: bool = False) -> None:
        self._log.throttle_s = self.p["warn_throttle"]
        self._log.warn(message, throttle)

    def stats(self) -> dict[str, float]:
        """Latency/overhead percentiles and counters (used by the benchmark)."""
        return self._monitor.summary(self._queue.dropped)

    def stop_worker(self) -> None:
        self._running = False
        self._queue.close()
        if self._worker.is_alive():
            self._worker.join(timeout=10)

    def destroy_node(self) -> None:
        self.stop_worker()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    configure_ros_environment()
    fix_malloc_thresholds()
    rclpy.init(args=args)
    node = executor = None
    try:
        try:
            node = SegmentNode()
        except Exception as e:  # bad parameters or model files: say why and exit non-zero
            print(f"segment_node: cannot start: {e}", file=sys.stderr)
            return 2
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C in a terminal reaches every process of the group and `ros2 launch` forwards it once
        # more: a second SIGINT must not interrupt the clean-up below.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Order matters: stop the worker, then the executor's threads, then the node and rclpy.
        if node is not None:
            node.stop_worker()
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
