"""Test harness for segment_node: a client that publishes sensors and collects outputs, a context
manager that runs the node as a real process, synthetic frames and small real models.

Used by the tests and by the node-overhead benchmark (which adds ``tests/`` to ``sys.path``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String

from clip2scene_interfaces.srv import QueryText
from clip2scene_ros.nodes import conversions as conv
from clip2scene_ros.nodes.node_process import NodeProcess, wait_until


def stamp_ns(header: Header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def make_header(t_ns: int, frame_id: str) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = int(t_ns // 1_000_000_000), int(t_ns % 1_000_000_000)
    return h


def _tf_message_type() -> type:
    from tf2_msgs.msg import TFMessage  # a ROS install, or the subset scripts/setup.sh builds

    return TFMessage


def _tf_message(transforms: Sequence[tuple[str, str, np.ndarray]], t_ns: int):  # noqa: ANN202 - TFMessage
    from geometry_msgs.msg import TransformStamped

    from clip2scene_ros.geometry.transforms import matrix_to_quaternion

    msgs = []
    for parent, child, m in transforms:
        t = TransformStamped(header=make_header(t_ns, parent), child_frame_id=child)
        tr, q = t.transform.translation, t.transform.rotation
        tr.x, tr.y, tr.z = (float(v) for v in m[:3, 3])
        q.w, q.x, q.y, q.z = (float(v) for v in matrix_to_quaternion(m))
        msgs.append(t)
    return _tf_message_type()(transforms=msgs)


class SegmentClient:
    """In-process rclpy participant talking to one segment_node (spun in a background thread)."""

    def __init__(
        self,
        input_topic: str = "/lidar/points",
        node_ns: str = "/segment_node",
        service: str = "/query_text",
        cameras: Sequence[str] = (),
        image_topic: str = "/camera/{name}/image_raw",
        info_topic: str = "/camera/{name}/camera_info",
        keep: int = 200,
    ) -> None:
        # An own context: ROS_DOMAIN_ID is read now, not whenever rclpy was first initialised.
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(f"segment_client_{time.monotonic_ns() % 10**9}", context=self.context)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.pub_cloud = self.node.create_publisher(PointCloud2, input_topic, reliable)
        self.pub_image = {c: self.node.create_publisher(Image, image_topic.format(name=c), reliable) for c in cameras}
        self.pub_info = {
            c: self.node.create_publisher(CameraInfo, info_topic.format(name=c), reliable) for c in cameras
        }
        self.outputs: dict[int, tuple[PointCloud2, float]] = {}  # stamp -> (msg, monotonic receipt)
        self.query_results: list[PointCloud2] = []
        self.legends: list[dict] = []
        self.diagnostics: list[DiagnosticArray] = []
        self._keep = keep
        self._lock = threading.Lock()
        ns = node_ns.rstrip("/")
        self.labels_topic = f"{ns}/labels"
        self.node.create_subscription(PointCloud2, self.labels_topic, self._on_labels, QoSProfile(depth=50))
        self.node.create_subscription(PointCloud2, f"{ns}/query_result", self._on_query_result, 10)
        self.node.create_subscription(String, f"{ns}/legend", self._on_legend, latched)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.client = self.node.create_client(QueryText, service)
        self._pub_tf = self._pub_tf_dynamic = None
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._running = True
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        while self._running and self.context.ok():
            self._executor.spin_once(timeout_sec=0.05)

    # -- callbacks ----------------------------------------------------------------------------
    def _on_labels(self, msg: PointCloud2) -> None:
        with self._lock:
            self.outputs[stamp_ns(msg.header)] = (msg, time.monotonic())
            while len(self.outputs) > self._keep:
                self.outputs.pop(next(iter(self.outputs)))

    def _on_query_result(self, msg: PointCloud2) -> None:
        self.query_results.append(msg)

    def _on_legend(self, msg: String) -> None:
        self.legends.append(json.loads(msg.data))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        self.diagnostics.append(msg)
        del self.diagnostics[:-20]

    # -- sending ------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 30.0, cameras: bool = True) -> None:
        """Wait until the node subscribes to our topics, publishes labels and serves queries."""

        def ready() -> bool:
            return (
                self.pub_cloud.get_subscription_count() > 0
                and self.node.count_publishers(self.labels_topic) > 0
                and self.client.service_is_ready()
                and (not cameras or all(p.get_subscription_count() > 0 for p in self.pub_image.values()))
            )

        wait_until(ready, timeout)

    def publish_points(self, points: np.ndarray, t_ns: int, frame_id: str = "lidar_top") -> PointCloud2:
        msg = conv.xyz_cloud(make_header(t_ns, frame_id), points)
        self.pub_cloud.publish(msg)
        return msg

    def publish_image(self, cam: str, rgb: np.ndarray, K: np.ndarray, t_ns: int, frame_id: str = "") -> None:
        frame_id = frame_id or f"{cam}_optical"
        header = make_header(t_ns, frame_id)
        info = CameraInfo(header=header, height=rgb.shape[0], width=rgb.shape[1], distortion_model="plumb_bob")
        info.k = [float(v) for v in np.asarray(K, dtype=np.float64).reshape(-1)]
        info.p = [
            float(K[0, 0]),
            0.0,
            float(K[0, 2]),
            0.0,
            0.0,
            float(K[1, 1]),
            float(K[1, 2]),
            0.0,
            0.0,
            0.0,
            1.0,
            0.0,
        ]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        self.pub_info[cam].publish(info)
        self.pub_image[cam].publish(conv.rgb_to_image(header, rgb))

    def publish_tf_static(self, transforms: Sequence[tuple[str, str, np.ndarray]]) -> None:
        """Latch (parent, child, parent_from_child 4x4) transforms on /tf_static, as tf2's static broadcaster."""
        if self._pub_tf is None:
            latched = QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
            )
            self._pub_tf = self.node.create_publisher(_tf_message_type(), "/tf_static", latched)
        self._pub_tf.publish(_tf_message(transforms, 0))

    def publish_tf(self, transforms: Sequence[tuple[str, str, np.ndarray]], t_ns: int, timeout: float = 30.0) -> None:
        """(parent, child, parent_from_child 4x4) poses at ``t_ns`` on /tf, as a tf2 broadcaster.

        /tf is volatile: the first call waits until the node subscribes, so no pose is lost."""
        if self._pub_tf_dynamic is None:
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            self._pub_tf_dynamic = self.node.create_publisher(_tf_message_type(), "/tf", qos)
            wait_until(lambda: self._pub_tf_dynamic.get_subscription_count() > 0, timeout)
        self._pub_tf_dynamic.publish(_tf_message(transforms, t_ns))

    def latest_diagnostics(self, hardware_prefix: str) -> dict[str, str] | None:
        """Key/values of the newest /diagnostics status whose hardware_id starts with the prefix."""
        for arr in reversed(list(self.diagnostics)):
            for st in arr.status:
                if st.hardware_id.startswith(hardware_prefix):
                    return {v.key: v.value for v in st.values}
        return None

    def wait_output(self, t_ns: int, timeout: float = 10.0) -> PointCloud2:
        return wait_until(lambda: self.outputs.get(t_ns, (None,))[0], timeout)

    def query(self, text: str, threshold: float = 0.0, top_k: int = 0, timeout: float = 10.0) -> QueryText.Response:
        if not self.client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("query service not available")
        future = self.client.call_async(QueryText.Request(text=text, threshold=float(threshold), top_k=int(top_k)))
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"no answer to query {text!r} within {timeout} s")
        return future.result()

    def close(self) -> None:
        self._running = False
        self._spinner.join(5)
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


@contextmanager
def running_segment_node(
    models: dict[str, str],
    params: dict[str, str],
    ns: str,
    cameras: Sequence[str] = (),
    env: dict[str, str] | None = None,
    startup_s: float = 60.0,
):  # noqa: ANN201 - yields (NodeProcess, SegmentClient)
    """Start ``clip2scene segment`` in namespace ``ns`` and a client wired to it; stop both after.

    ``params``: node parameters as ``name -> value`` strings (``-p name:=value``); topics relative
    to ``ns``. Raises if the node exits with an error.
    """
    cmd = [sys.executable, "-m", "clip2scene_ros.cli.main", "segment", "--namespace", ns,
           "--checkpoint", models["checkpoint"]]  # fmt: skip
    if models.get("teacher"):
        cmd += ["--teacher", models["teacher"]]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    proc = NodeProcess(cmd, env)
    client = None
    try:
        proc.wait_for_log(r"listening on", startup_s)
        client = SegmentClient(
            input_topic=f"{ns}/{params.get('input_topic', 'points')}",
            node_ns=f"{ns}/segment_node",
            service=f"{ns}/query_text",
            cameras=cameras,
            image_topic=ns + "/" + params.get("camera_image_topic", "camera/{name}/image_raw"),
            info_topic=ns + "/" + params.get("camera_info_topic", "camera/{name}/camera_info"),
        )
        client.wait_ready(30.0, cameras=bool(cameras))
        yield proc, client
    finally:
        if client is not None:
            client.close()
        code = proc.stop(timeout=30.0)  # a clean shutdown can take seconds on a loaded machine
        if code not in (0, -2, 130):
            raise RuntimeError(f"node exited with {code}:\n{proc.log()[-3000:]}")


class SyntheticFrames:
    """Synthetic-world frames (LiDAR + one small camera) with stamps 100 ms apart, for tests."""

    def __init__(self, camera: str = "cam_front", seed: int = 3, num_frames: int = 2) -> None:
        from clip2scene_ros.sim import SimConfig, generate_sequence

        cfg = SimConfig.default().with_overrides(
            **{"cameras.names": [camera], "cameras.width": 208, "cameras.height": 112, "threads": 1}
        )
        self.frames = list(generate_sequence(cfg, seed=seed, num_frames=num_frames))
        f = self.frames[0]
        self.lidar_from_cam = np.linalg.inv(f.lidar_to_ego) @ f.cameras[0].cam_to_ego
        self.t_ns = 1_700_000_000_000_000_000
        self.i = 0

    def next(self):  # noqa: ANN201 - (stamp, sim Frame)
        self.t_ns += 100_000_000
        f = self.frames[self.i % len(self.frames)]
        self.i += 1
        return self.t_ns, f


def make_test_models(
    root: str | Path, student: str = "minkunet18_tiny", frame: str = "", **overrides: object
) -> dict[str, str]:
    """Real models for tests and benchmarks when the shipped ones are missing.

    Teacher: the shipped default if present (returned as ""), else the tiny teacher architecture
    with random weights saved as a teacher directory. Student: a random-weight ``student`` model
    whose embedding size matches the teacher, saved with ``save_checkpoint``; ``frame`` records the
    frame the student reads clouds in (e.g. "base_link"), ``overrides`` change its config (in_features, ...).
    """
    from safetensors.torch import save_file

    import clip2scene_ros.teacher
    from clip2scene_ros.models import create_model, save_checkpoint
    from clip2scene_ros.teacher import create_teacher
    from clip2scene_ros.teacher.loading import ASSET_DIR, CONFIG_FILENAME

    root = Path(root)
    if (ASSET_DIR / CONFIG_FILENAME).is_file():
        teacher_spec, teacher = "", create_teacher("default")
    else:
        cfg_path = Path(clip2scene_ros.teacher.__file__).resolve().parent / "model_configs" / "c2s-tiny-vit-p16.json"
        teacher = create_teacher(str(cfg_path), random_init=True)
        dest = root / "teacher"
        dest.mkdir(parents=True, exist_ok=True)
        (dest / CONFIG_FILENAME).write_text(json.dumps({"model_cfg": json.loads(cfg_path.read_text())}))
        save_file({k: v.detach().clone().contiguous() for k, v in teacher.model.state_dict().items()},
                  str(dest / "model.safetensors"))  # fmt: skip
        teacher_spec = str(dest)
    dim = int(teacher.encode_text(["x"]).shape[1])
    ckpt = root / "student"
    extra = {"frame": {"name": frame}} if frame else None
    save_checkpoint(ckpt, create_model(student, embed_dim=dim, **overrides), extra)
    return {"teacher": teacher_spec, "checkpoint": str(ckpt)}
