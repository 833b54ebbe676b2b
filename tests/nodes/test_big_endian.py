"""Big-endian PointCloud2 input is read and converted, never rejected."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from clip2scene_ros.models.inputs import InputSpec
from clip2scene_ros.nodes import conversions as conv


def _big_endian_cloud(n: int = 50) -> tuple[PointCloud2, np.ndarray]:
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "ring"], "formats": [">f4", ">f4", ">f4", ">f4", ">u2"],
                   "offsets": [0, 4, 8, 12, 16], "itemsize": 20})  # fmt: skip
    arr = np.zeros(n, dt)
    rng = np.random.default_rng(0)
    for f in ("x", "y", "z"):
        arr[f] = rng.uniform(-20, 20, n)
    arr["intensity"] = rng.uniform(0, 255, n)
    arr["ring"] = np.arange(n) % 32
    msg = PointCloud2(header=Header(frame_id="lidar"), height=1, width=n, is_bigendian=True, point_step=20)
    msg.row_step = 20 * n
    types = {"x": 7, "y": 7, "z": 7, "intensity": 7, "ring": 4}
    msg.fields = [PointField(name=k, offset=dt.fields[k][1], datatype=t, count=1) for k, t in types.items()]
    msg.data = arr.tobytes()
    return msg, arr


def test_big_endian_cloud_is_segmentable_and_its_output_little_endian():
    msg, arr = _big_endian_cloud()
    pts, _ = conv.cloud_points(msg, InputSpec(intensity_scale=1.0))
    np.testing.assert_array_equal(pts[:, 0], arr["x"].astype(np.float32))
    np.testing.assert_array_equal(pts[:, 3], arr["intensity"].astype(np.float32))
    labels = np.arange(len(arr), dtype=np.uint16)
    scores = np.linspace(0, 1, len(arr), dtype=np.float32)
    rgb = conv.pack_rgb(np.zeros((len(arr), 3), np.uint8))
    out = conv.labelled_cloud(msg, labels, scores, rgb)
    assert not out.is_bigendian
    got = conv.cloud_to_array(out)
    for f in ("x", "y", "z", "intensity", "ring"):
        np.testing.assert_array_equal(got[f], arr[f])
    np.testing.assert_array_equal(got["label"], labels)
    np.testing.assert_array_equal(got["score"], scores)
