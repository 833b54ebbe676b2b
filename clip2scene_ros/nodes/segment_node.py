"""``segment_node``: synchronised LiDAR (+ cameras) in, labelled clouds and text queries out.

Threads: the executor runs the subscriptions (which only enqueue), the query service and the
diagnostics timer; one worker thread runs inference, so a slow model never blocks the callbacks.
The frame queue is bounded and drops the OLDEST frame when full (counted in /diagnostics).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Vector3
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String

from clip2scene_interfaces.srv import QueryText
from clip2scene_ros.inference.segmenter import (
    CameraInput,
    Segmenter,
    SegmenterConfig,
    SegmentResult,
    group_instances,
    load_vocabulary,
    palette,
)
from clip2scene_ros.nodes import conversions as conv
from clip2scene_ros.nodes.sync import (
    FrameQueue,
    LatencyStats,
    LidarMasterSync,
    RateMeter,
    StaticTransformTree,
    add_transforms,
    pose_to_matrix,
)

try:  # a ROS install, or the TFMessage-only subset scripts/setup.sh builds into the venv
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the installation
    TFMessage = None

_STR_ARRAY = Parameter.Type.STRING_ARRAY

# name -> (default, description). Arrays carry an explicit type (an empty list has none).
PARAMETERS: dict[str, tuple[Any, str]] = {
    "input_topic": ("/lidar/points", "PointCloud2 input (any layout with x, y, z; intensity optional)"),
    "output_topic": ("~/labels", "labelled cloud: input points + label uint16, score float32, rgb"),
    "legend_topic": ("~/legend", "latched class legend (std_msgs/String, JSON)"),
    "query_result_topic": ("~/query_result", "highlighted cloud of the last /query_text answer"),
    "query_service": ("query_text", "QueryText service name (relative: follows the namespace)"),
    "qos.reliability": ("best_effort", "input QoS reliability: best_effort | reliable"),
    "qos.depth": (5, "input QoS history depth"),
    "output_qos.reliability": ("reliable", "output QoS reliability: best_effort | reliable"),
    "cameras": ([], "camera names, e.g. [cam_front, cam_back]; empty = LiDAR only"),
    "camera_image_topic": ("/camera/{name}/image_raw", "image topic template ({name} = camera)"),
    "camera_info_topic": ("/camera/{name}/camera_info", "CameraInfo topic template"),
    "camera_transport": (
        "raw",
        "raw (sensor_msgs/Image) | compressed (CompressedImage on <topic>/compressed)",
    ),
    "camera_timeout": (1.0, "seconds without images before a camera counts as silent (warning)"),
    "sync.policy": ("lidar_master", "lidar_master | approximate_time (needs message_filters)"),
    "sync.tolerance": (0.05, "max |stamp difference| in s between a cloud and a camera image"),
    "use_tf_static": (True, "read camera extrinsics from /tf_static (latched static transforms)"),
    "lidar_frame": ("", "frame of the points; empty = the cloud's header.frame_id"),
    "checkpoint": ("", "student checkpoint directory; empty = the shipped default"),
    "teacher": ("", "teacher (text encoder) name/path; empty = the shipped default"),
    "vocabulary": ("synthetic", "vocabulary name (config/vocab/<name>.yaml) or YAML path"),
    "vocabulary_classes": ([], "runtime vocabulary, overrides 'vocabulary'; 'a|b' = synonyms"),
    "backend": ("torch", "torch | onnxruntime | tensorrt"),
    "device": ("cpu", "cpu | cuda | cuda:N"),
    "precision": ("fp32", "fp32 | bf16 | fp16"),
    "head": ("global", "model head aligned with the text space"),
    "voxel_size": (0.0, "voxel size in m; 0 = the checkpoint's"),
    "point_features": ([], "cloud fields fed to the model after x, y, z; empty = the model's"),
    "intensity_scale": (
        0.00392156862745098,
        "factor applied to the intensity field before the model (models train on 0..1: "
        "1/255 for 0..255 sensors such as nuScenes and the synthetic world)",
    ),
    "range_min": (0.0, "points closer than this (m) are not segmented (label 0)"),
    "range_max": (0.0, "points farther than this (m) are not segmented; 0 = unlimited"),
    "max_points": (300000, "larger clouds: a random subset is segmented, the rest gets label 0"),
    "fusion": (False, "ensemble the 3D prediction with teacher features of camera-seen points"),
    "fusion_weight": (0.5, "weight of the camera feature in the fused feature"),
    "queue_size": (2, "frames waiting for inference; when full the oldest is dropped"),
    "num_threads": (0, "torch / onnxruntime intra-op threads; 0 = their default"),
    "max_text_length": (256, "longest accepted query text (characters)"),
    "query.max_results": (100000, "most indices one query returns"),
    "query.instances": (True, "group query matches into instances (centroids + box sizes)"),
    "query.cluster_radius": (0.6, "grid cell (m) for instance grouping"),
    "query.min_cluster_points": (5, "smallest instance"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "max_latency_ms": (500.0, "latency above this makes /diagnostics WARN"),
    "warn_throttle": (2.0, "seconds between repeats of the same warning"),
}
_ARRAY_TYPES = {"cameras": _STR_ARRAY, "vocabulary_classes": _STR_ARRAY, "point_features": _STR_ARRAY}
_RUNTIME_PARAMS = {
    "vocabulary", "vocabulary_classes", "fusion_weight", "sync.tolerance", "camera_timeout",
    "max_text_length", "query.max_results", "query.instances", "query.cluster_radius",
    "query.min_cluster_points", "max_latency_ms", "warn_throttle",
}  # fmt: skip


def default_checkpoint() -> Path:
    """Where the shipped default student lives (issue 8 ships it)."""
    return Path(__file__).resolve().parent.parent / "assets" / "student"


@dataclass
class Frame:
    msg: PointCloud2
    receipt: float  # monotonic seconds at arrival
    images: dict[str, tuple[Any, int]] | None = None  # pre-synchronised (approximate_time policy)


def _qos(reliability: str, depth: int, latched: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class SegmentNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("segment_node", **kwargs)
        self._throttle: dict[str, float] = {}
        self._warnings = 0
        self._last_warning = ""
        self._declare_parameters()
        self.p = {name: self._param(name) for name in PARAMETERS}
        self._validate_parameters()  # raises ValueError listing every problem
        self._declare_extrinsics()

        if self.p["num_threads"] > 0:
            import torch

            torch.set_num_threads(int(self.p["num_threads"]))
        t0 = time.perf_counter()
        self.segmenter = Segmenter.from_config(self._segmenter_config())
        if self.p["point_features"]:
            self.segmenter.feature_fields = tuple(self.p["point_features"])
        vocab = self.segmenter.vocabulary
        self.get_logger().info(
            f"model ready in {time.perf_counter() - t0:.1f} s: backend={self.p['backend']} "
            f"device={self.p['device']} checkpoint={self._checkpoint} "
            f"vocabulary={vocab.name} ({len(vocab.classes)} classes), "
            f"features=x,y,z,{','.join(self.segmenter.feature_fields)}"
        )

        # state shared between threads
        self._lock = threading.Lock()
        self._last: tuple[Any, np.ndarray, SegmentResult] | None = None  # header, xyz, result
        self._queue = FrameQueue(int(self.p["queue_size"]))
        self._pending_vocab: Any = None
        self._last_stamp_ns: int | None = None
        self._infos: dict[str, CameraInfo] = {}
        self._image_shapes: dict[str, tuple[int, int]] = {}
        self._tf = StaticTransformTree()
        self._stats = LatencyStats()
        self._cloud_rate = RateMeter()
        self._out_rate = RateMeter()
        self._cam_rates = {c: RateMeter() for c in self.p["cameras"]}
        self._frames_done = 0
        self._last_fusion = (0, 0)  # (cameras, points) fused into the last frame, for /diagnostics
        self._warnings = 0
        self._last_warning = ""
        self._failures = 0
        self._failures_reported = 0
        self._started = time.monotonic()
        self._warned_features: set[str] = set()

        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        out_qos = _qos(self.p["output_qos.reliability"], 5)
        self.pub_labels = self.create_publisher(PointCloud2, self.p["output_topic"], out_qos)
        self.pub_query = self.create_publisher(PointCloud2, self.p["query_result_topic"], out_qos)
        self.pub_legend = self.create_publisher(String, self.p["legend_topic"], _qos("reliable", 1, latched=True))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._publish_legend()

        in_qos = _qos(self.p["qos.reliability"], int(self.p["qos.depth"]))
        self.sync = LidarMasterSync(self.p["cameras"], self.p["sync.tolerance"])
        self._subscribe(in_qos)
        self.create_service(QueryText, self.p["query_service"], self._on_query, callback_group=self._service_group)
        self.create_timer(self.p["diagnostics_period"], self._on_diagnostics, callback_group=self._timer_group)
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

    def _declare_parameters(self) -> None:
        for name, (default, desc) in PARAMETERS.items():
            # An empty list has no type in rclpy (it becomes a byte array), so arrays are declared by
            # type; left unset (or `[]` in YAML) they stay uninitialised and read as [].
            value = _ARRAY_TYPES.get(name, default)
            self.declare_parameter(name, value, ParameterDescriptor(description=desc))

    def _param(self, name: str) -> Any:
        try:
            value = self.get_parameter(name).value
        except ParameterUninitializedException:
            return []
        if name in _ARRAY_TYPES:
            return [v for v in value if v.strip()]  # tolerate [""] as "empty"
        return value

    def _declare_extrinsics(self) -> None:
        self._extrinsics: dict[str, np.ndarray] = {}
        for cam in self.p["cameras"]:
            name = f"extrinsics.{cam}"
            self.declare_parameter(
                name,
                Parameter.Type.DOUBLE_ARRAY,
                ParameterDescriptor(
                    description=f"pose of {cam}'s optical frame in the LiDAR frame: [x,y,z,qx,qy,qz,qw] "
                    "or 16 row-major values; empty = from /tf_static",
                ),
            )
            try:
                values = list(self.get_parameter(name).value or [])
            except ParameterUninitializedException:
                values = []
            if values:
                try:
                    self._extrinsics[cam] = pose_to_matrix(values)
                except ValueError as e:
                    raise ValueError(f"parameter {name}: {e}") from None

    def _validate_parameters(self) -> None:
        p, errors = self.p, []

        def choice(name: str, options: tuple[str, ...]) -> None:
            if p[name] not in options:
                errors.append(f"{name}='{p[name]}' must be one of: {', '.join(options)}")

        choice("qos.reliability", ("best_effort", "reliable"))
        choice("output_qos.reliability", ("best_effort", "reliable"))
        choice("camera_transport", ("raw", "compressed"))
        choice("sync.policy", ("lidar_master", "approximate_time"))
        choice("backend", ("torch", "onnxruntime", "tensorrt"))
        choice("precision", ("fp32", "bf16", "fp16"))
        for name in ("qos.depth", "queue_size", "max_points", "max_text_length", "query.max_results"):
            if p[name] < 1:
                errors.append(f"{name}={p[name]} must be >= 1")
        for name in ("camera_timeout", "diagnostics_period", "query.cluster_radius"):
            if not p[name] > 0:
                errors.append(f"{name}={p[name]} must be > 0")
        if p["sync.tolerance"] < 0:
            errors.append(f"sync.tolerance={p['sync.tolerance']} must be >= 0 (seconds)")
        if len(set(p["cameras"])) != len(p["cameras"]) or any(not c.strip() for c in p["cameras"]):
            errors.append(f"cameras={p['cameras']} must be distinct, non-empty names")
        for name in ("camera_image_topic", "camera_info_topic"):
            if p["cameras"] and "{name}" not in p[name]:
                errors.append(f"{name}='{p[name]}' must contain '{{name}}' (replaced by each camera name)")
        if not p["device"].startswith(("cpu", "cuda")):
            errors.append(f"device='{p['device']}' must be cpu, cuda or cuda:N")
        if p["sync.policy"] == "approximate_time":
            try:
                import message_filters  # noqa: F401
            except ImportError:
                errors.append("sync.policy=approximate_time needs message_filters, which is not installed; "
                              "use sync.policy=lidar_master")  # fmt: skip
        if p["fusion"] and not p["cameras"]:
            errors.append("fusion=true needs at least one camera in 'cameras'")
        ckpt = p["checkpoint"] or str(default_checkpoint())
        if not Path(ckpt).expanduser().is_dir():
            errors.append(
                f"checkpoint '{ckpt}' is not a directory"
                + ("" if p["checkpoint"] else " (no shipped default yet)")
                + "; pass a checkpoint directory: -p checkpoint:=/path/to/ckpt (clip2scene segment --checkpoint DIR)"
            )
        self._checkpoint = ckpt
        vocab = p["vocabulary_classes"] or p["vocabulary"]
        try:
            load_vocabulary(vocab)
        except (ValueError, FileNotFoundError) as e:
            errors.append(f"vocabulary: {e}")
        try:
            self._segmenter_config().validate()
        except ValueError as e:
            ckpt_reported = any(err.startswith("checkpoint") for err in errors)
            for line in str(e).splitlines()[1:]:
                line = line.strip(" -")
                if not (ckpt_reported and line.startswith("checkpoint")):
                    errors.append(line)
        if errors:
            raise ValueError("invalid segment_node parameters:\n  - " + "\n  - ".join(dict.fromkeys(errors)))

    def _segmenter_config(self) -> SegmenterConfig:
        p = self.p
        return SegmenterConfig(
            checkpoint=self._checkpoint,
            vocabulary=list(p["vocabulary_classes"]) or p["vocabulary"],
            teacher=p["teacher"] or None,
            backend=p["backend"],
            device=p["device"],
            precision=p["precision"],
            head=p["head"],
            max_points=p["max_points"],
            range_min=p["range_min"],
            range_max=p["range_max"],
            fusion=p["fusion"],
            fusion_weight=p["fusion_weight"],
            voxel_size=p["voxel_size"],
            threads=p["num_threads"],
        )

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        updates = {}
        for prm in params:
            if prm.name.startswith("extrinsics."):
                try:
                    cam = prm.name.split(".", 1)[1]
                    updates[("extr", cam)] = pose_to_matrix(prm.value) if prm.value else None
                except ValueError as e:
                    return SetParametersResult(successful=False, reason=f"{prm.name}: {e}")
                continue
            if prm.name not in PARAMETERS:
                continue
            if prm.name not in _RUNTIME_PARAMS:
                return SetParametersResult(successful=False, reason=f"restart the node to change '{prm.name}'")
            value = prm.value
            if prm.name in _ARRAY_TYPES:
                value = [v for v in (value or []) if v.strip()]
            updates[prm.name] = value
        new = {**self.p, **{k: v for k, v in updates.items() if isinstance(k, str)}}
        vocab_spec = list(new["vocabulary_classes"]) or new["vocabulary"]
        if "vocabulary" in updates or "vocabulary_classes" in updates:
            try:
                vocab = load_vocabulary(vocab_spec)
            except (ValueError, FileNotFoundError) as e:
                return SetParametersResult(successful=False, reason=f"vocabulary: {e}")
            self._pending_vocab = vocab  # re-encoded once, by the worker
        for k, v in updates.items():
            if isinstance(k, tuple):
                if v is None:
                    self._extrinsics.pop(k[1], None)
                else:
                    self._extrinsics[k[1]] = v
            else:
                self.p[k] = v
        self.segmenter.fusion_weight = float(self.p["fusion_weight"])
        self.sync.tolerance_ns = int(self.p["sync.tolerance"] * 1e9)
        return SetParametersResult(successful=True)

    # ---- subscriptions --------------------------------------------------------------------------

    def _subscribe(self, qos: QoSProfile) -> None:
        g = self._sensor_group
        cams = self.p["cameras"]
        compressed = self.p["camera_transport"] == "compressed"
        img_type = CompressedImage if compressed else Image
        if self.p["sync.policy"] == "approximate_time":
            self._subscribe_approximate(qos, img_type, compressed)
        else:
            self.create_subscription(PointCloud2, self.p["input_topic"], self._on_cloud, qos, callback_group=g)
            for cam in cams:
                topic = self._image_topic(cam)
                self.create_subscription(img_type, topic, lambda m, c=cam: self._on_image(c, m), qos, callback_group=g)
        for cam in cams:
            self.create_subscription(
                CameraInfo,
                self.p["camera_info_topic"].format(name=cam),
                lambda m, c=cam: self._on_info(c, m),
                qos,
                callback_group=g,
            )
        if cams and self.p["use_tf_static"]:
            if TFMessage is None:
                missing = [c for c in cams if c not in self._extrinsics]
                if missing:
                    self._warn(
                        "tf2_msgs is not installed, so /tf_static cannot be read; give extrinsics.<camera> "
                        f"parameters for {', '.join(missing)} (they are skipped for fusion until then)"
                    )
            else:
                latched = QoSProfile(
                    depth=100,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL,
                )
                self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched, callback_group=g)

    def _image_topic(self, cam: str) -> str:
        topic = self.p["camera_image_topic"].format(name=cam)
        return topic + "/compressed" if self.p["camera_transport"] == "compressed" else topic

    def _subscribe_approximate(self, qos: QoSProfile, img_type: type, compressed: bool) -> None:
        """message_filters' ApproximateTime over the cloud and every camera (where installed)."""
        import message_filters

        subs = [message_filters.Subscriber(self, PointCloud2, self.p["input_topic"], qos_profile=qos)]
        for cam in self.p["cameras"]:
            subs.append(message_filters.Subscriber(self, img_type, self._image_topic(cam), qos_profile=qos))
        sync = message_filters.ApproximateTimeSynchronizer(subs, 10, self.p["sync.tolerance"])

        def on_synced(cloud: PointCloud2, *images: Any) -> None:
            matched = {}
            for cam, img in zip(self.p["cameras"], images, strict=True):
                if self._check_image(cam, img):
                    matched[cam] = (img, abs(_stamp_ns(img.header) - _stamp_ns(cloud.header)))
            self._on_cloud(cloud, matched)

        sync.registerCallback(on_synced)
        self._approx_sync = sync

    def _on_cloud(self, msg: PointCloud2, images: dict | None = None) -> None:
        self._cloud_rate.tick()
        if not self._queue.put(Frame(msg, time.monotonic(), images)):
            self._warn(
                f"inference is slower than the input: dropped the oldest queued frame "
                f"({self._queue.dropped} dropped so far; queue_size={self.p['queue_size']})",
                throttle=True,
            )

    def _on_image(self, cam: str, msg: Any) -> None:
        self._cam_rates[cam].tick()
        if not self._check_image(cam, msg):
            return
        if not self.sync.add(cam, _stamp_ns(msg.header), msg):
            self._warn(f"camera '{cam}': image time stamp went backwards; cleared its buffer", throttle=True)

    def _check_image(self, cam: str, msg: Any) -> bool:
        """Cheap validity checks at arrival, so bad camera input is reported even without fusion."""
        if isinstance(msg, Image):
            enc = (msg.encoding or "").lower()
            if enc not in {e.lower() for e in conv.SUPPORTED_ENCODINGS}:
                self._warn(
                    f"camera '{cam}': unsupported image encoding '{msg.encoding}'; supported: "
                    f"{', '.join(conv.SUPPORTED_ENCODINGS)} (or CompressedImage); image ignored",
                    throttle=True,
                )
                return False
            self._image_shapes[cam] = (msg.height, msg.width)
            info = self._infos.get(cam)
            if info is not None:
                try:
                    conv.check_info_matches(info, msg.height, msg.width)
                except ValueError as e:
                    self._warn(f"camera '{cam}': {e}; camera ignored until they agree", throttle=True)
                    return False
        return True

    def _on_info(self, cam: str, msg: CameraInfo) -> None:
        shape = self._image_shapes.get(cam)
        if shape is not None:
            try:
                conv.check_info_matches(msg, *shape)
            except ValueError as e:
                self._warn(f"camera '{cam}': {e}", throttle=True)
        self._infos[cam] = msg

    def _on_tf_static(self, msg: Any) -> None:
        add_transforms(self._tf, msg.transforms)

    # ---- worker ---------------------------------------------------------------------------------

    def _work(self) -> None:
        while self._running:
            try:
                if self._pending_vocab is not None:
                    vocab, self._pending_vocab = self._pending_vocab, None
                    t0 = time.perf_counter()
                    if self.segmenter.set_vocabulary(vocab):
                        self.get_logger().info(
                            f"vocabulary '{vocab.name}' ({len(vocab.classes)} classes) encoded in "
                            f"{(time.perf_counter() - t0) * 1e3:.0f} ms"
                        )
                        self._publish_legend()
                frame = self._queue.get(timeout=0.2)
                if frame is not None:
                    self.process(frame)
            except Exception as e:  # keep serving: one bad frame must not stop the node
                self._failures += 1
                self._warn(f"frame failed: {type(e).__name__}: {e}")
                self.get_logger().debug(traceback.format_exc())

    def process(self, frame: Frame) -> PointCloud2 | None:
        """One cloud -> labelled cloud. Bad input is warned about and skipped."""
        t0, c0 = time.perf_counter(), time.thread_time()
        msg = frame.msg
        stamp = _stamp_ns(msg.header)
        if self._last_stamp_ns is not None and stamp < self._last_stamp_ns:
            self._warn(
                f"cloud time stamps went backwards by {(self._last_stamp_ns - stamp) / 1e9:.3f} s "
                "(bag loop or clock reset?); processing it anyway",
                throttle=True,
            )
        self._last_stamp_ns = stamp
        try:
            cloud = conv.cloud_to_array(msg)
            points = conv.points_from_array(cloud, self.segmenter.feature_fields) if cloud.size else None
        except ValueError as e:
            self._warn(f"cloud on {self.p['input_topic']} skipped: {e}", throttle=True)
            return None
        if points is not None and self.p["intensity_scale"] != 1.0 and "intensity" in self.segmenter.feature_fields:
            points[:, 3 + self.segmenter.feature_fields.index("intensity")] *= self.p["intensity_scale"]
        if cloud.size == 0:
            self._warn(f"empty cloud on {self.p['input_topic']}; publishing an empty labelled cloud", throttle=True)
            if "x" not in (cloud.dtype.names or ()):
                return None
            points = np.zeros((0, 3 + len(self.segmenter.feature_fields)), np.float32)
        missing = [f for f in self.segmenter.feature_fields if f not in cloud.dtype.names]
        if missing and tuple(missing) not in self._warned_features:
            self._warned_features.add(tuple(missing))
            self._warn(f"cloud has no {', '.join(missing)} field; the model gets zeros for it")
        t_conv = time.perf_counter()

        cameras = self._camera_inputs(msg, stamp, frame.images) if self.p["cameras"] else []
        t_sync = time.perf_counter()
        if len(points) > self.p["max_points"]:  # warn before the (long) inference, not after
            self._warn(
                f"cloud has {len(points)} points, more than max_points={self.p['max_points']}: segmenting "
                "a random subset, the other points get label 0 (raise max_points to segment all)",
                throttle=True,
            )
        result = self.segmenter.segment(points, cameras)
        t_seg = time.perf_counter()
        if result.num_invalid:
            self._warn(
                f"{result.num_invalid} of {result.num_points} points have NaN/Inf coordinates; they get label 0",
                throttle=True,
            )
        out = conv.labelled_cloud(msg, result.labels, result.scores, self._packed_palette[result.labels])
        t_post = time.perf_counter()
        self.pub_labels.publish(out)
        t_pub = time.perf_counter()
        with self._lock:
            self._last = (msg.header, points[:, :3].copy() if points.size else points[:, :3], result)
        self._out_rate.tick()
        self._frames_done += 1
        self._last_fusion = (len(cameras) if result.num_fused else 0, result.num_fused)
        latency = (time.monotonic() - frame.receipt) * 1e3
        now_ns = self.get_clock().now().nanoseconds
        self._stats.add("latency", latency)
        self._stats.add("age", (now_ns - stamp) / 1e6)
        inference = result.timings_ms.get("inference", 0.0)
        overhead = (t_pub - t0) * 1e3 - inference - result.timings_ms.get("fusion", 0.0)
        self._stats.add("overhead", overhead)
        cpu = (time.thread_time() - c0) * 1e3
        overhead_cpu = cpu - result.timings_ms.get("inference_cpu", 0.0) - result.timings_ms.get("fusion_cpu", 0.0)
        self._stats.add("overhead_cpu", overhead_cpu)
        self._stats.add("processing", (t_pub - t0) * 1e3)
        # per-stage figures (debug log, /diagnostics, benchmark)
        self._stats.add("stage.decode", (t_conv - t0) * 1e3)
        self._stats.add("stage.sync", (t_sync - t_conv) * 1e3)
        for k, v in result.timings_ms.items():
            if not k.endswith("_cpu"):
                self._stats.add(f"stage.{k}", v)
        self._stats.add("stage.build_output", (t_post - t_seg) * 1e3)
        self._stats.add("stage.publish", (t_pub - t_post) * 1e3)
        self.get_logger().debug(
            f"frame {self._frames_done}: {result.num_points} pts, cameras={len(cameras)} | convert "
            f"{(t_conv - t0) * 1e3:.2f} ms, sync {(t_sync - t_conv) * 1e3:.2f} ms, "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in result.timings_ms.items() if not k.endswith("_cpu"))
            + f", postprocess {(t_post - t_seg) * 1e3:.2f} ms, publish {(t_pub - t_post) * 1e3:.2f} ms | "
            f"queue wait+total {latency:.1f} ms"
        )
        return out

    def _camera_inputs(self, msg: PointCloud2, stamp: int, pre: dict | None) -> list[CameraInput]:
        matched = pre if pre is not None else self.sync.match(stamp)
        if not self.p["fusion"]:
            return []  # matched images are only decoded when fusion uses them
        lidar_frame = self.p["lidar_frame"] or msg.header.frame_id
        out = []
        for cam, (img_msg, _dt) in matched.items():
            info = self._infos.get(cam)
            if info is None:
                self._warn(f"camera '{cam}': no CameraInfo yet; skipped", throttle=True)
                continue
            try:
                rgb = (
                    conv.compressed_to_rgb(img_msg)
                    if isinstance(img_msg, CompressedImage)
                    else conv.image_to_rgb(img_msg)
                )
                conv.check_info_matches(info, *rgb.shape[:2])
                K = conv.camera_info_matrix(info)
            except ValueError as e:
                self._warn(f"camera '{cam}': {e}; skipped", throttle=True)
                continue
            lidar_from_cam = self._extrinsics.get(cam)
            if lidar_from_cam is None:
                cam_frame = info.header.frame_id or img_msg.header.frame_id
                lidar_from_cam = self._tf.lookup(lidar_frame, cam_frame)
                if lidar_from_cam is None:
                    self._warn(
                        f"camera '{cam}': no transform {lidar_frame} <- {cam_frame} (from /tf_static or "
                        f"extrinsics.{cam}); skipped",
                        throttle=True,
                    )
                    continue
            out.append(CameraInput(cam, rgb, K, np.linalg.inv(lidar_from_cam)))
        return out

    # ---- outputs --------------------------------------------------------------------------------

    def _publish_legend(self) -> None:
        vocab = self.segmenter.vocabulary
        self._palette = palette(int(self.segmenter.label_ids.max()) if len(vocab.classes) else 0)
        self._packed_palette = conv.pack_rgb(self._palette)  # label -> packed rgb in one gather
        legend = {
            "vocabulary": vocab.name,
            "unlabelled": {"id": 0, "color": self._palette[0].tolist()},
            "classes": [
                {"id": i, "name": c.name, "names": list(c.names), "color": self._palette[i].tolist()}
                for i, c in zip(vocab.ids, vocab.classes, strict=True)
            ],
        }
        self.pub_legend.publish(String(data=json.dumps(legend)))

    def _on_query(self, req: QueryText.Request, res: QueryText.Response) -> QueryText.Response:
        text = (req.text or "").strip()
        cap = int(self.p["max_text_length"])
        if not text:
            res.success, res.message = False, "empty query text; send a phrase such as 'a parked car'"
            return res
        if len(text) > cap:
            res.success = False
            res.message = f"query text has {len(text)} characters; the limit is {cap} (parameter max_text_length)"
            return res
        if not math.isfinite(req.threshold):
            res.success, res.message = False, f"threshold {req.threshold} is not a finite number"
            return res
        with self._lock:
            last = self._last
        if last is None:
            res.success = False
            res.message = f"no cloud segmented yet; is anything publishing on {self.p['input_topic']}?"
            return res
        header, xyz, result = last
        res.header = header
        try:
            t0 = time.perf_counter()
            sim = self.segmenter.query(text, result)
        except Exception as e:
            res.success, res.message = False, f"query failed: {type(e).__name__}: {e}"
            return res
        processed = np.zeros(len(sim), dtype=bool)
        processed[result.indices] = True
        if req.top_k > 0:
            k = min(int(req.top_k), int(processed.sum()))
            cand = np.flatnonzero(processed)
            idx = cand[np.argpartition(-sim[cand], k - 1)[:k]] if k else cand[:0]
            rule = f"top {req.top_k}"
        else:
            idx = np.flatnonzero(processed & (sim >= req.threshold))
            rule = f"similarity >= {req.threshold:.3f}"
        idx = idx[np.argsort(-sim[idx], kind="stable")]
        truncated = len(idx) > self.p["query.max_results"]
        idx = idx[: self.p["query.max_results"]]
        res.indices = idx.astype(np.uint32).tolist()
        res.scores = sim[idx].astype(np.float32).tolist()
        if self.p["query.instances"] and len(idx):
            for centroid, size, _members in group_instances(
                xyz[idx], self.p["query.cluster_radius"], self.p["query.min_cluster_points"]
            ):
                res.instance_centroids.append(Point(x=float(centroid[0]), y=float(centroid[1]), z=float(centroid[2])))
                res.instance_sizes.append(Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])))
        self._publish_query_cloud(header, xyz, sim, idx)
        res.success = True
        res.message = (
            f"'{text}': {len(idx)} of {len(sim)} points ({rule})"
            + (f", truncated to query.max_results={self.p['query.max_results']}" if truncated else "")
            + (f", {len(res.instance_centroids)} instances" if self.p["query.instances"] else "")
            + (f"; best similarity {float(sim[processed].max()):.3f}" if processed.any() else "")
            + f"; {(time.perf_counter() - t0) * 1e3:.1f} ms"
        )
        return res

    def _publish_query_cloud(self, header, xyz: np.ndarray, sim: np.ndarray, idx: np.ndarray) -> None:
        colors = np.full((len(xyz), 3), 70, dtype=np.uint8)
        if len(idx):
            s = sim[idx]
            t = (s - s.min()) / max(float(s.max() - s.min()), 1e-6)
            colors[idx] = np.stack([np.full_like(t, 255), 255 * t, np.zeros_like(t)], axis=1).astype(np.uint8)
        match = np.zeros(len(xyz), dtype=np.uint8)
        match[idx] = 1
        self.pub_query.publish(
            conv.xyz_cloud(header, xyz, {"score": sim.astype(np.float32), "match": match, "rgb": conv.pack_rgb(colors)})
        )

    def _on_diagnostics(self) -> None:
        now = time.monotonic()
        level, problems = DiagnosticStatus.OK, []
        if not self._worker.is_alive() and self._running:
            level, problems = DiagnosticStatus.ERROR, ["inference worker stopped"]
        if self._failures > self._failures_reported:
            problems.append(f"{self._failures - self._failures_reported} frames failed (see log)")
            self._failures_reported = self._failures
        silent = {}
        if self.p["cameras"] and now - self._started > self.p["camera_timeout"]:
            silent = self.sync.silent_cameras(self.p["camera_timeout"], now)
            for cam, age in silent.items():
                what = "never published" if age is None else f"silent for {age:.1f} s"
                if self._cloud_rate.rate(now) > 0:  # only worth a warning while LiDAR frames arrive
                    self._warn(
                        f"camera '{cam}' {what} ({self._image_topic(cam)}); segmenting without it",
                        throttle=True,
                    )
                problems.append(f"camera {cam} {what}")
        lat_p50 = self._stats.percentile("latency", 50)
        if lat_p50 > self.p["max_latency_ms"]:
            problems.append(f"latency {lat_p50:.0f} ms > max_latency_ms")
        if problems and level == DiagnosticStatus.OK:
            level = DiagnosticStatus.WARN
        kv = {
            "input_rate_hz": f"{self._cloud_rate.rate(now):.2f}",
            "output_rate_hz": f"{self._out_rate.rate(now):.2f}",
            "frames_in": str(self._cloud_rate.count),
            "frames_out": str(self._frames_done),
            "drops": str(self._queue.dropped),
            "frames_failed": str(self._failures),
            "queue": str(len(self._queue)),
            "latency_ms_p50": f"{lat_p50:.1f}",
            "latency_ms_p95": f"{self._stats.percentile('latency', 95):.1f}",
            "stamp_age_ms_p50": f"{self._stats.percentile('age', 50):.1f}",
            "overhead_ms_p50": f"{self._stats.percentile('overhead', 50):.2f}",
            "cameras_fused_last": str(self._last_fusion[0]),  # camera images used for the last frame
            "points_fused_last": str(self._last_fusion[1]),
            "warnings": str(self._warnings),
            "last_warning": self._last_warning,
        }
        for cam, meter in self._cam_rates.items():
            kv[f"camera_rate_hz.{cam}"] = f"{meter.rate(now):.2f}"
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: segmentation pipeline",
            message="; ".join(problems) or "ok",
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=v) for k, v in kv.items()],
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)

    def _warn(self, message: str, throttle: bool = False) -> None:
        self._warnings += 1
        self._last_warning = message
        if throttle:
            # rclpy throttles per call site; key by message start so distinct problems all show.
            key = message[:40]
            now = time.monotonic()
            last = self._throttle.get(key)
            if last is not None and now - last < self.p["warn_throttle"]:
                return
            self._throttle[key] = now
        self.get_logger().warning(message)

    @property
    def last_result(self) -> tuple[Any, np.ndarray, SegmentResult] | None:
        with self._lock:
            return self._last

    def stats(self) -> dict[str, float]:
        """Latency/overhead percentiles and counters (used by the benchmark)."""
        out = {"frames_out": self._frames_done, "drops": self._queue.dropped}
        for name in self._stats.values:
            out[f"{name}_ms_p50"] = self._stats.percentile(name, 50)
            out[f"{name}_ms_p95"] = self._stats.percentile(name, 95)
        return out

    def stop_worker(self) -> None:
        self._running = False
        self._queue.close()
        if self._worker.is_alive():
            self._worker.join(timeout=10)

    def destroy_node(self) -> None:
        self.stop_worker()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    from clip2scene_ros.resources import configure_ros_environment

    configure_ros_environment()
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
