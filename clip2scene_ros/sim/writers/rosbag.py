"""Write simulated drives as rosbag2 (mcap) through ``rosbags`` — the topic contract of the node/replay.

Topics (header stamps = the frame's time stamp, frames as named):

- ``/lidar/points`` ``sensor_msgs/msg/PointCloud2``, fields x, y, z, intensity (float32), frame ``lidar_top``
- ``/lidar/gt_labels`` ``sensor_msgs/msg/PointCloud2``, same stamp and point order, fields x, y, z
  (float32) + label (uint16, synthetic ids), point_step 16
- ``/camera/<name>/image_raw`` ``sensor_msgs/msg/Image`` (rgb8), frame ``<name>_optical``
- ``/camera/<name>/camera_info`` ``sensor_msgs/msg/CameraInfo`` (plumb_bob, zero distortion)
- ``/tf_static`` ``tf2_msgs/msg/TFMessage`` base_link -> lidar_top and base_link -> <name>_optical
  (transient-local QoS, written once at the first stamp)
- ``/tf`` ``tf2_msgs/msg/TFMessage`` map -> base_link (the ego pose) per frame
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from clip2scene_ros.cloud_layout import cloud_to_array
from clip2scene_ros.geometry.transforms import matrix_to_quaternion
from clip2scene_ros.sim.frame import Frame

LIDAR_TOPIC = "/lidar/points"
LABEL_TOPIC = "/lidar/gt_labels"
LIDAR_FRAME = "lidar_top"
BASE_FRAME = "base_link"
MAP_FRAME = "map"


def image_topic(name: str) -> str:
    return f"/camera/{name}/image_raw"


def info_topic(name: str) -> str:
    return f"/camera/{name}/camera_info"


def optical_frame(name: str) -> str:
    return f"{name}_optical"


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


class _Msgs:
    def __init__(self) -> None:
        self.ts = typestore()
        t = self.ts.types
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Header = t["std_msgs/msg/Header"]
        self.PointField = t["sensor_msgs/msg/PointField"]
        self.PointCloud2 = t["sensor_msgs/msg/PointCloud2"]
        self.Image = t["sensor_msgs/msg/Image"]
        self.CameraInfo = t["sensor_msgs/msg/CameraInfo"]
        self.RegionOfInterest = t["sensor_msgs/msg/RegionOfInterest"]
        self.TFMessage = t["tf2_msgs/msg/TFMessage"]
        self.TransformStamped = t["geometry_msgs/msg/TransformStamped"]
        self.Transform = t["geometry_msgs/msg/Transform"]
        self.Vector3 = t["geometry_msgs/msg/Vector3"]
        self.Quaternion = t["geometry_msgs/msg/Quaternion"]

    def header(self, stamp_ns: int, frame_id: str):
        return self.Header(
            stamp=self.Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id
        )

    def cloud(
        self,
        stamp_ns: int,
        frame_id: str,
        fields: list[tuple[str, int, int]],
        point_step: int,
        data: np.ndarray,
        n: int,
    ):
        return self.PointCloud2(
            header=self.header(stamp_ns, frame_id), height=1, width=n,
            fields=[self.PointField(name=f, offset=o, datatype=d, count=1) for f, o, d in fields],
            is_bigendian=False, point_step=point_step, row_step=point_step * n,
            data=np.frombuffer(data.tobytes(), np.uint8), is_dense=True,
        )  # fmt: skip

    def transform(self, stamp_ns: int, parent: str, child: str, t: np.ndarray):
        q = matrix_to_quaternion(t[:3, :3])
        return self.TransformStamped(
            header=self.header(stamp_ns, parent), child_frame_id=child,
            transform=self.Transform(
                translation=self.Vector3(x=float(t[0, 3]), y=float(t[1, 3]), z=float(t[2, 3])),
                rotation=self.Quaternion(x=float(q[1]), y=float(q[2]), z=float(q[3]), w=float(q[0])),
            ),
        )  # fmt: skip


_FLOAT32, _UINT16 = 7, 4  # sensor_msgs/PointField datatypes


def _latched_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
                QosLiveliness.AUTOMATIC, zero, False)]  # fmt: skip


def write_rosbag(frames: Iterable[Frame], bag_dir: str | Path, *, with_labels: bool = True) -> Path:
    """Write frames to a new rosbag2 mcap folder ``bag_dir`` (must not exist). Returns the path."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    bag_dir = Path(bag_dir)
    if bag_dir.exists():
        raise FileExistsError(f"{bag_dir} exists; rosbag2 writes a new folder: remove it or pick another --out")
    bag_dir.parent.mkdir(parents=True, exist_ok=True)
    m = _Msgs()
    ts = m.ts
    conns: dict[str, object] = {}
    with Writer(bag_dir, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:

        def conn(topic: str, msgtype: str, latched: bool = False):
            if topic not in conns:
                conns[topic] = writer.add_connection(
                    topic, msgtype, typestore=ts, offered_qos_profiles=_latched_qos() if latched else ()
                )
            return conns[topic]

        def put(topic: str, msgtype: str, msg, stamp: int, latched: bool = False) -> None:
            writer.write(conn(topic, msgtype, latched), stamp, ts.serialize_cdr(msg, msgtype))

        static_done: set[str] = set()
        for frame in frames:
            stamp = int(frame.timestamp_ns)
            static = []
            if LIDAR_FRAME not in static_done:
                static.append(m.transform(stamp, BASE_FRAME, LIDAR_FRAME, frame.lidar_to_ego))
                static_done.add(LIDAR_FRAME)
            for cam in frame.cameras:
                if cam.name not in static_done:
                    static.append(m.transform(stamp, BASE_FRAME, optical_frame(cam.name), cam.cam_to_ego))
                    static_done.add(cam.name)
            if static:
                put("/tf_static", "tf2_msgs/msg/TFMessage", m.TFMessage(transforms=static), stamp, latched=True)
            put(
                "/tf",
                "tf2_msgs/msg/TFMessage",
                m.TFMessage(transforms=[m.transform(stamp, MAP_FRAME, BASE_FRAME, frame.ego_pose)]),
                stamp,
            )
            n = len(frame.points)
            pts = np.ascontiguousarray(frame.points, dtype=np.float32)
            fields = [("x", 0, _FLOAT32), ("y", 4, _FLOAT32), ("z", 8, _FLOAT32), ("intensity", 12, _FLOAT32)]
            put(LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2", m.cloud(stamp, LIDAR_FRAME, fields, 16, pts, n), stamp)
            if with_labels:
                rec = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u2"), ("pad", "<u2")])
                rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
                rec["label"] = frame.labels
                lf = [("x", 0, _FLOAT32), ("y", 4, _FLOAT32), ("z", 8, _FLOAT32), ("label", 12, _UINT16)]
                put(LABEL_TOPIC, "sensor_msgs/msg/PointCloud2", m.cloud(stamp, LIDAR_FRAME, lf, 16, rec, n), stamp)
            for cam in frame.cameras:
                cstamp = int(cam.timestamp_ns)
                h, w = cam.height, cam.width
                hdr = m.header(cstamp, optical_frame(cam.name))
                img = m.Image(
                    header=hdr,
                    height=h,
                    width=w,
                    encoding="rgb8",
                    is_bigendian=0,
                    step=3 * w,
                    data=np.ascontiguousarray(cam.image).reshape(-1),
                )
                put(image_topic(cam.name), "sensor_msgs/msg/Image", img, cstamp)
                K = cam.K
                P = np.hstack([K, np.zeros((3, 1))])
                info = m.CameraInfo(
                    header=hdr, height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5),
                    k=K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                    binning_x=0, binning_y=0,
                    roi=m.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                )  # fmt: skip
                put(info_topic(cam.name), "sensor_msgs/msg/CameraInfo", info, cstamp)
    return bag_dir


def read_cloud(msg) -> np.ndarray:
    """PointCloud2 (as deserialised by rosbags) -> structured numpy array using the declared fields."""
    return cloud_to_array(msg)
