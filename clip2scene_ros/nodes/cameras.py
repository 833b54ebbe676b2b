"""The node's cameras: their latest CameraInfo, image buffers for synchronisation, extrinsics.

``CameraRig`` receives camera messages (images, CameraInfo) and, for one cloud, hands
the segmenter the matched images as ``CameraInput`` through the ROS-free
``inference.camera_inputs.assemble_camera_inputs``. Problems are reported through ``warn`` and the
camera is skipped; nothing here raises on bad input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from clip2scene_ros.inference.camera_inputs import DecodedCamera, assemble_camera_inputs
from clip2scene_ros.inference.segmenter import CameraInput
from clip2scene_ros.nodes import conversions as conv
from clip2scene_ros.nodes.camera_sync import LidarMasterSync
from clip2scene_ros.nodes.transform_buffer import TransformBuffer

Warn = Callable[[str], None]


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class CameraRig:
    def __init__(
        self, cameras: list[str], tolerance_s: float, extrinsics: Mapping[str, np.ndarray], warn: Warn,
        buffer_bytes: int = 0, tf: TransformBuffer | None = None,
    ) -> None:  # fmt: skip
        self.cameras = list(cameras)
        # buffer_bytes 0: fusion is off, so images are checked and counted but never held
        self.sync = LidarMasterSync(cameras, tolerance_s, max_bytes=buffer_bytes, buffer=buffer_bytes > 0)
        self.extrinsics = dict(extrinsics)  # camera -> lidar_from_camera 4x4; wins over TF
        self.tf = tf if tf is not None else TransformBuffer()
        self._infos: dict[str, CameraInfo] = {}
        self._shapes: dict[str, tuple[int, int]] = {}
        self.frame_ids: dict[str, str] = {}  # camera -> optical frame of its last decoded image
        self._warn = warn

    def set_extrinsic(self, cam: str, lidar_from_cam: np.ndarray | None) -> None:
        if lidar_from_cam is None:
            self.extrinsics.pop(cam, None)
        else:
            self.extrinsics[cam] = lidar_from_cam

    def on_info(self, cam: str, msg: CameraInfo) -> None:
        shape = self._shapes.get(cam)
        try:
            if shape is not None:
                conv.check_info_matches(msg, *shape)
        except ValueError as e:
            self._warn(f"camera '{cam}': {e}")
        self._infos[cam] = msg

    def check_image(self, cam: str, msg: Any) -> bool:
        """Cheap validity checks at arrival, so bad camera input is reported even without fusion."""
        if isinstance(msg, Image):
            self._shapes[cam] = (msg.height, msg.width)
        problem = conv.image_problem(msg, self._infos.get(cam))
        if problem:
            self._warn(f"camera '{cam}': {problem}")
        return problem is None

    def on_image(self, cam: str, msg: Any) -> None:
        """An image for LiDAR-master synchronisation (buffered until a cloud asks for it)."""
        if self.check_image(cam, msg) and not self.sync.add(cam, stamp_ns(msg.header), msg):
            self._warn(f"camera '{cam}': image time stamp went backwards; cleared its buffer")

    def inputs(self, stamp: int, lidar_frame: str, matched: dict | None = None) -> list[CameraInput]:
        """Camera inputs for the cloud at ``stamp``: ``matched`` {camera: (image msg, |dt|)} when a
        synchroniser already paired them, else the closest buffered image of each camera."""
        matched = self.sync.match(stamp) if matched is None else matched
        inputs, skipped = assemble_camera_inputs(
            {cam: img for cam, (img, _dt) in matched.items()}, self._decode, lidar_frame, self.extrinsics,
            lambda target, source: self.tf.lookup(target, source, stamp),
        )  # fmt: skip
        for message in skipped:
            self._warn(message)
        return inputs

    def _decode(self, cam: str, img_msg: Any) -> DecodedCamera:
        info = self._infos.get(cam)
        if info is None:
            raise ValueError("no CameraInfo yet")
        compressed = isinstance(img_msg, CompressedImage)
        rgb = conv.compressed_to_rgb(img_msg) if compressed else conv.image_to_rgb(img_msg)
        conv.check_info_matches(info, *rgb.shape[:2])
        self.frame_ids[cam] = info.header.frame_id or img_msg.header.frame_id
        return DecodedCamera(rgb, conv.camera_info_matrix(info), self.frame_ids[cam])


def subscribe_approximate(
    node: Any, cloud_topic: str, image_topics: list[str], image_type: type, qos: Any, tolerance_s: float,
    rig: CameraRig, on_cloud: Callable[[Any, dict | None], None], on_image: Callable[[str, Any], None],
    camera_timeout_s: float,
) -> Any:  # fmt: skip
    """message_filters' ApproximateTime over the cloud and every camera.

    ``on_cloud(cloud, matched)`` gets {camera: (image, |dt| ns)} for a synchronised set. A set
    cannot form while a camera is silent, so then each cloud goes on at once with ``matched=None``
    (the closest buffered images of the live cameras): a dead camera costs at most
    ``camera_timeout_s`` of clouds, never the LiDAR output. Every image also reaches ``on_image``.
    """
    import message_filters
    from sensor_msgs.msg import PointCloud2

    cloud_sub = message_filters.Subscriber(node, PointCloud2, cloud_topic, qos_profile=qos)
    image_subs = [message_filters.Subscriber(node, image_type, t, qos_profile=qos) for t in image_topics]
    for cam, sub in zip(rig.cameras, image_subs, strict=True):
        sub.registerCallback(lambda m, c=cam: on_image(c, m))
    sync = message_filters.ApproximateTimeSynchronizer([cloud_sub, *image_subs], 10, tolerance_s)

    passed: deque[int] = deque(maxlen=64)  # clouds already sent on alone (a late set must not repeat them)

    def on_synced(cloud: Any, *images: Any) -> None:
        if stamp_ns(cloud.header) in passed:
            return
        matched = {}
        for cam, img in zip(rig.cameras, images, strict=True):
            if rig.check_image(cam, img):
                matched[cam] = (img, abs(stamp_ns(img.header) - stamp_ns(cloud.header)))
        on_cloud(cloud, matched)

    def on_cloud_arrival(cloud: Any) -> None:
        if rig.sync.silent_cameras(camera_timeout_s):
            passed.append(stamp_ns(cloud.header))
            on_cloud(cloud, None)

    sync.registerCallback(on_synced)
    cloud_sub.registerCallback(on_cloud_arrival)
    return sync
