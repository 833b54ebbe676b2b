"""``~/overlay/<camera>`` images: the labelled points drawn on each camera image (throttled).

Built only when someone subscribes and at most once per ``overlay.period`` seconds, so a node
nobody watches pays nothing for it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from clip2scene_ros.geometry.overlay import draw_overlay
from clip2scene_ros.inference.segmenter import CameraInput
from clip2scene_ros.nodes import conversions as conv


class OverlayPublisher:
    def __init__(self, node: Any, cameras: list[str], qos: Any) -> None:
        self._pubs = {cam: node.create_publisher(Image, f"~/overlay/{cam}", qos) for cam in cameras}
        self._last = -float("inf")

    def due(self, period: float) -> bool:
        """Whether to draw now: enabled, watched, and the period has passed."""
        if period <= 0 or not any(p.get_subscription_count() for p in self._pubs.values()):
            return False
        return time.monotonic() - self._last >= period

    def publish(
        self, header: Any, cameras: list[CameraInput], xyz: np.ndarray, colors: np.ndarray | None,
        frame_ids: dict[str, str],
    ) -> int:  # fmt: skip
        """Draw and publish one overlay per camera input (stamped like the cloud, in the camera's
        frame); ``colors`` None = by depth. Returns how many were published."""
        self._last = time.monotonic()
        n = 0
        for cam in cameras:
            pub = self._pubs.get(cam.name)
            if pub is None:
                continue
            ov = draw_overlay(cam.image, cam.K, cam.cam_from_lidar, xyz, colors)
            msg = conv.rgb_to_image(Header(stamp=header.stamp, frame_id=frame_ids.get(cam.name, "")), ov.image)
            pub.publish(msg)
            n += 1
        return n
