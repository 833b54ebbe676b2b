"""In-process tests of the node's ROS-free plumbing and message conversions (no DDS traffic)."""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from clip2scene_ros.models.inputs import InputSpec
from clip2scene_ros.nodes.camera_sync import CameraBuffer, LidarMasterSync
from clip2scene_ros.nodes.frame_queue import FrameQueue

REPO = Path(__file__).resolve().parents[2]


# ---- queue and sync -------------------------------------------------------------------------


def test_frame_queue_drops_oldest_and_counts():
    q = FrameQueue(2)
    assert q.put(1) and q.put(2)
    assert not q.put(3)  # 1 dropped
    assert not q.put(4)  # 2 dropped
    assert q.dropped == 2
    assert [q.get(0), q.get(0), q.get(0.01)] == [3, 4, None]


def test_frame_queue_get_wakes_on_put():
    q = FrameQueue(1)
    out = []
    t = threading.Thread(target=lambda: out.append(q.get(timeout=10)))
    t.start()
    q.put("frame")
    t.join(10)
    assert out == ["frame"]


def test_lidar_master_sync_picks_closest_within_tolerance_and_skips_missing():
    s = LidarMasterSync(["front", "back"], tolerance_s=0.05)
    for t_ms in (0, 100, 200):
        s.add("front", t_ms * 1_000_000, f"f{t_ms}")
    s.add("back", 400_000_000, "b400")  # far from the cloud: must not be used
    m = s.match(130_000_000)
    assert m == {"front": ("f100", 30_000_000)}
    assert s.match(160_000_000)["front"][0] == "f200"
    assert s.match(500_000_000) == {}


def test_camera_buffer_clears_when_time_goes_backwards():
    b = CameraBuffer()
    assert b.add(10, "a") and b.add(20, "b")
    assert not b.add(5, "c")  # jump back -> history cleared
    assert b.closest(20, 100) == ("c", 15)


def test_silent_cameras():
    s = LidarMasterSync(["a", "b"], 0.05)
    s.add("a", 0, "x")
    now = s.buffers["a"].last_receipt
    silent = s.silent_cameras(1.0, now=now + 0.5)
    assert silent == {"b": None}
    assert set(s.silent_cameras(1.0, now=now + 2.0)) == {"a", "b"}


# ---- conversions ----------------------------------------------------------------------------


def _cloud(n=100, fields=("x", "y", "z", "intensity"), pad=0):
    from std_msgs.msg import Header

    from clip2scene_ros.nodes.conversions import array_to_cloud

    offsets = [4 * i for i in range(len(fields))]
    dtype = np.dtype(
        {
            "names": list(fields),
            "formats": ["<f4"] * len(fields),
            "offsets": offsets,
            "itemsize": offsets[-1] + 4 + pad,
        }
    )
    arr = np.zeros(n, dtype=dtype)
    rng = np.random.default_rng(1)
    for f in fields:
        arr[f] = rng.normal(size=n)
    h = Header(frame_id="lidar_top")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return array_to_cloud(h, arr), arr


def test_cloud_roundtrip_and_labelled_cloud_keeps_points():
    from clip2scene_ros.nodes import conversions as conv

    msg, arr = _cloud(100, pad=4)
    back = conv.cloud_to_array(msg)
    pts, missing = InputSpec(intensity_scale=1.0).points_from_cloud(back)
    assert missing == []
    np.testing.assert_array_equal(pts[:, 3], arr["intensity"])
    labels = np.arange(100, dtype=np.uint16)
    scores = np.linspace(0, 1, 100, dtype=np.float32)
    colors = np.stack([labels % 256] * 3, 1).astype(np.uint8)
    out = conv.labelled_cloud(msg, labels, scores, conv.pack_rgb(colors))
    got = conv.cloud_to_array(out)
    assert out.header.stamp.sec == 12 and out.header.frame_id == "lidar_top"
    for f in ("x", "y", "z", "intensity"):
        np.testing.assert_array_equal(got[f], arr[f])
    np.testing.assert_array_equal(got["label"], labels)
    np.testing.assert_array_equal(got["score"], scores)
    np.testing.assert_array_equal(conv.unpack_rgb(got["rgb"]), colors)
    assert {f.name: f.datatype for f in out.fields}["label"] == 4  # PointField.UINT16


def test_cloud_without_xyz_is_a_clear_error():
    from clip2scene_ros.nodes import conversions as conv

    msg, _ = _cloud(10, fields=("a", "b"))
    with pytest.raises(ValueError, match="no x/y/z"):
        InputSpec().points_from_cloud(conv.cloud_to_array(msg))


def test_images_encodings():
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from clip2scene_ros.nodes import conversions as conv

    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(conv.image_to_rgb(conv.rgb_to_image(Header(), rgb)), rgb)
    bgr = conv.rgb_to_image(Header(), rgb[:, :, ::-1].copy(), "bgr8")
    np.testing.assert_array_equal(conv.image_to_rgb(bgr), rgb)
    bad = Image(encoding="32FC1", height=2, width=2, step=8, data=bytes(16))
    with pytest.raises(ValueError, match="unsupported image encoding '32FC1'"):
        conv.image_to_rgb(bad)
    with pytest.raises(ValueError, match="CameraInfo says 10x10"):
        conv.check_info_matches(CameraInfo(width=10, height=10), 6, 8)


def test_compressed_image_decodes():
    import cv2
    from sensor_msgs.msg import CompressedImage

    from clip2scene_ros.nodes import conversions as conv

    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    out = conv.compressed_to_rgb(CompressedImage(format="png", data=png.tobytes()))
    np.testing.assert_array_equal(out, rgb)
    with pytest.raises(ValueError, match="cannot decode"):
        conv.compressed_to_rgb(CompressedImage(format="jpeg", data=b"garbage"))


# ---- config, schema and launch file ---------------------------------------------------------


def test_config_schema_and_node_parameters_agree():
    import jsonschema

    from clip2scene_ros.inference.registry import BACKENDS, PRECISIONS
    from clip2scene_ros.nodes import parameters

    config = yaml.safe_load((REPO / "config" / "segment.yaml").read_text())
    schema = parameters.schema()
    jsonschema.validate(config, schema)
    values = config["/**"]["ros__parameters"]
    specs = parameters.specs()
    assert set(values) == set(specs)
    for name, value in values.items():
        assert value == specs[name].default, f"config/segment.yaml {name}={value!r} != schema default"
    # the choices come from the registry, not from a copy in the schema file
    raw = json.loads((REPO / "config" / "schema" / "segment.schema.json").read_text())
    assert "enum" not in raw["definitions"]["segment_node"]["properties"]["backend"]
    assert specs["backend"].enum == BACKENDS and specs["precision"].enum == PRECISIONS
    bad = {"/**": {"ros__parameters": {**values, "backend": "tensorflow"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_launch_file_compiles_and_references_existing_files():
    path = REPO / "launch" / "segment.launch.py"
    src = path.read_text()
    compile(src, str(path), "exec")
    tree = ast.parse(src)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    assert '"segment.yaml"' in src and (REPO / "config" / "segment.yaml").is_file()
    for arg in ("config", "backend", "namespace"):
        assert f'"{arg}"' in src
    assert 'executable="segment_node"' in src
    setup = (REPO / "setup.py").read_text()
    assert "segment_node = clip2scene_ros.nodes.segment_node:main" in setup


def test_cli_segment_builds_ros_arguments():
    import argparse

    from clip2scene_ros.cli import segment

    p = argparse.ArgumentParser()
    segment.add_arguments(p)
    args = p.parse_args(["--backend", "onnxruntime", "--namespace", "robot1", "-p", "fusion:=true"])
    ros = segment.ros_arguments(args)
    assert ros[:2] == ["--ros-args", "--params-file"] and ros[2].endswith("segment.yaml")
    assert "backend:=onnxruntime" in ros and "fusion:=true" in ros and "__ns:=/robot1" in ros


def test_empty_and_padded_clouds_convert():
    from clip2scene_ros.nodes import conversions as conv

    msg, _ = _cloud(0)
    out = conv.labelled_cloud(msg, np.zeros(0, np.uint16), np.zeros(0, np.float32), np.zeros(0, np.float32))
    assert out.width == 0 and len(out.data) == 0 and "label" in [f.name for f in out.fields]


def test_colour_encodings_beyond_the_fast_path_go_through_cv_bridge():
    """rgb8/bgr8/mono: own zero-copy views; yuv422, bayer, 16-bit colour: cv_bridge where installed."""
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge is not installed (scripts/setup.sh kit)")
    import cv2

    from clip2scene_ros.nodes import conversions as conv

    rgb = np.random.default_rng(0).integers(0, 255, (8, 10, 3), dtype=np.uint8)
    bridge = cv_bridge.CvBridge()
    msg = bridge.cv2_to_imgmsg((rgb.astype(np.uint16) * 257)[:, :, ::-1].copy(), encoding="bgr16")
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)
    bayer = cv2.cvtColor(rgb[:, :, ::-1], cv2.COLOR_BGR2GRAY)  # any 8-bit mosaic: conversion must run
    msg = bridge.cv2_to_imgmsg(bayer, encoding="bayer_rggb8")
    assert conv.image_problem(msg, None) is None and conv.image_to_rgb(msg).shape == (8, 10, 3)
    msg.encoding = "32FC1"
    assert "unsupported image encoding '32FC1'" in conv.image_problem(msg, None)
