"""Assemble the camera inputs of one cloud: decoded image, intrinsics and LiDAR->camera pose. ROS-free.

Each camera matched to a cloud is decoded by a caller-given function (the node decodes ROS
messages; a replay tool might read files); its pose comes from an explicit extrinsic when one is
configured, else from a transform lookup (TF at the cloud's stamp). A camera that cannot be used is skipped with
a message saying why, so fusion degrades to fewer cameras instead of failing the frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .segmenter import CameraInput


@dataclass
class DecodedCamera:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    K: np.ndarray  # 3x3 intrinsics
    frame_id: str  # the camera's optical frame, for transform lookups


Decoder = Callable[[str, Any], DecodedCamera]  # (camera, matched item) -> decoded; ValueError = unusable
Lookup = Callable[[str, str], "np.ndarray | None"]  # (target, source) -> target_from_source 4x4


def assemble_camera_inputs(
    matched: Mapping[str, Any],
    decode: Decoder,
    lidar_frame: str,
    extrinsics: Mapping[str, np.ndarray],
    lookup: Lookup,
) -> tuple[list[CameraInput], list[str]]:
    """(camera inputs in ``matched`` order, one message per skipped camera)."""
    inputs: list[CameraInput] = []
    skipped: list[str] = []
    for cam, item in matched.items():
        try:
            decoded = decode(cam, item)
        except (ValueError, KeyError) as e:
            skipped.append(f"camera '{cam}': {e}; skipped")
            continue
        lidar_from_cam = extrinsics.get(cam)
        if lidar_from_cam is None:
            lidar_from_cam = lookup(lidar_frame, decoded.frame_id)
            if lidar_from_cam is None:
                skipped.append(
                    f"camera '{cam}': no transform {lidar_frame} <- {decoded.frame_id} (from TF or "
                    f"extrinsics.{cam}); skipped"
                )
                continue
        cam_from_lidar = np.linalg.inv(np.asarray(lidar_from_cam, dtype=np.float64))
        inputs.append(CameraInput(cam, decoded.image, np.asarray(decoded.K, dtype=np.float64), cam_from_lidar))
    return inputs, skipped
