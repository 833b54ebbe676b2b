"""Bag reading errors and the dataset -> rosbag2 converters (real files, no ROS processes)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from clip2scene_ros.replay import bag as B


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst / next(p.name for p in dst.iterdir() if p.suffix == ".mcap")


def test_truncated_bag_gives_clear_error_from_cli(labelled_bag, tmp_path, capsys, caplog):
    from clip2scene_ros.cli.main import main

    mcap = _copy(labelled_bag, tmp_path / "truncated")
    with open(mcap, "r+b") as f:
        f.truncate(mcap.stat().st_size // 2)
    with pytest.raises(B.BagError, match="truncated or corrupt"):
        B.inspect_bag(tmp_path / "truncated")
    code = main(["replay", str(tmp_path / "truncated"), "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "truncated or corrupt" in caplog.text and "ros2 bag reindex" in caplog.text
    assert not (tmp_path / "r").exists()


def test_corrupt_chunk_is_detected_not_skipped(labelled_bag, tmp_path):
    mcap = _copy(labelled_bag, tmp_path / "corrupt")
    data = bytearray(mcap.read_bytes())
    data[200:6000] = bytes(5800)  # wipe the first chunk; the index still lists its messages
    mcap.write_bytes(bytes(data))
    with pytest.raises(B.BagError, match=r"truncated or corrupt"):
        B.verify(tmp_path / "corrupt", [B.LIDAR_TOPIC, B.LABEL_TOPIC])


def test_missing_bag_and_missing_topic_messages(labelled_bag, tmp_path):
    with pytest.raises(B.BagError, match="does not exist"):
        B.inspect_bag(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(B.BagError, match="metadata.yaml"):
        B.inspect_bag(tmp_path / "plain")
    info = B.inspect_bag(labelled_bag)
    with pytest.raises(B.BagError, match="--lidar-topic"):
        info.require_cloud("/velodyne_points")
    labels = B.read_labels(labelled_bag)
    assert len(labels) == 3 and all(v.dtype == np.int64 for v in labels.values())


def test_nuscenes_layout_converts_to_bag_with_benchmark_labels(tmp_path, small_sim_config):
    from clip2scene_ros.replay.convert import convert
    from clip2scene_ros.sim import generate_sequence
    from clip2scene_ros.sim.taxonomy import map_labels
    from clip2scene_ros.sim.writers import write_dataset
    from clip2scene_ros.sim.writers.nuscenes import is_keyframe

    cfg = small_sim_config
    write_dataset("nuscenes", tmp_path / "nusc", cfg, [4], 4, keyframe_every=1, lead_in=2, progress=False)
    bag = convert("nuscenes", tmp_path / "nusc", tmp_path / "nusc_bag", progress=False)
    info = B.inspect_bag(bag)
    assert info.custom[B.GT_TAXONOMY_KEY] == "nuscenes16"
    assert "/camera/cam_front/image_raw" in info.topics
    frames = [f for f in generate_sequence(cfg, 4, 4) if is_keyframe(f.index, 1, 2)]
    assert info.counts[B.LIDAR_TOPIC] == len(frames) == 2
    gt = B.read_labels(bag)
    store = B.typestore()
    clouds = {}
    for _t, ty, _ts, raw in B.iter_raw(bag, [B.LIDAR_TOPIC]):
        msg = B.deserialize(raw, ty, store)
        clouds[B.header_stamp_ns(msg)] = B.cloud_array(msg)
    for f in frames:
        stamp = f.timestamp_ns // 1000 * 1000  # nuScenes keeps microseconds
        np.testing.assert_array_equal(gt[stamp], map_labels(f.labels, "synthetic_to_nuscenes16"))
        np.testing.assert_allclose(clouds[stamp]["x"], f.points[:, 0], atol=1e-5)
        np.testing.assert_allclose(clouds[stamp]["intensity"], f.points[:, 3], atol=1e-4)


def test_semantickitti_layout_converts_to_bag(tmp_path, small_sim_config):
    from clip2scene_ros.replay.convert import convert
    from clip2scene_ros.sim import generate_sequence
    from clip2scene_ros.sim.taxonomy import map_labels
    from clip2scene_ros.sim.writers import write_dataset
    from clip2scene_ros.sim.writers.semantickitti import VELO_FROM_LIDAR

    cfg = small_sim_config
    write_dataset("semantickitti", tmp_path / "kitti", cfg, [5], 2, progress=False)
    bag = convert("semantickitti", tmp_path / "kitti", tmp_path / "kitti_bag", sequence="05", progress=False)
    info = B.inspect_bag(bag)
    assert info.custom[B.GT_TAXONOMY_KEY] == "semantickitti19" and info.counts[B.LIDAR_TOPIC] == 2
    gt = [v for _, v in sorted(B.read_labels(bag).items())]
    frames = list(generate_sequence(cfg, 5, 2))
    for f, g in zip(frames, gt, strict=True):
        np.testing.assert_array_equal(g, map_labels(f.labels, "synthetic_to_semantickitti19"))
    first = next(B.iter_raw(bag, [B.LIDAR_TOPIC]))
    arr = B.cloud_array(B.deserialize(first[3], first[1]))
    velo = frames[0].points[:, :3].astype(np.float64) @ VELO_FROM_LIDAR[:3, :3].T
    np.testing.assert_allclose(np.stack([arr["x"], arr["y"], arr["z"]], 1), velo, atol=1e-4)


@pytest.mark.real_data
def test_real_nuscenes_keyframe_converts(real_data, tmp_path):
    """The real nuScenes keyframe (no lidarseg): points as recorded, six cameras, LiDAR extrinsics."""
    import json

    from clip2scene_ros.geometry.calibration import nuscenes_record_transform
    from clip2scene_ros.geometry.transforms import matrix_to_quaternion
    from clip2scene_ros.replay.convert import convert

    root = real_data / "nuscenes-sample"
    bag = convert("nuscenes", root, tmp_path / "real_bag", version="v1.0-mini", progress=False)
    info = B.inspect_bag(bag)
    assert B.LABEL_TOPIC not in info.topics and B.GT_TAXONOMY_KEY not in info.custom
    assert sum(t.endswith("/image_raw") for t in info.topics) == 6 and info.counts[B.LIDAR_TOPIC] == 1
    raw = np.fromfile(next((root / "samples" / "LIDAR_TOP").iterdir()), dtype=np.float32).reshape(-1, 5)
    _t, ty, _ts, data = next(B.iter_raw(bag, [B.LIDAR_TOPIC]))
    arr = B.cloud_array(B.deserialize(data, ty))
    for i, name in enumerate(("x", "y", "z", "intensity")):
        np.testing.assert_array_equal(arr[name], raw[:, i])
    _t, ty, _ts, data = next(B.iter_raw(bag, ["/tf_static"]))
    tf = {t.child_frame_id: t.transform for t in B.deserialize(data, ty).transforms}
    sd = json.loads((root / "v1.0-mini" / "sample_data.json").read_text())
    cs = {r["token"]: r for r in json.loads((root / "v1.0-mini" / "calibrated_sensor.json").read_text())}
    lidar_cs = cs[next(r for r in sd if "LIDAR_TOP" in r["filename"])["calibrated_sensor_token"]]
    T = nuscenes_record_transform(lidar_cs)
    tr = tf["lidar_top"]
    np.testing.assert_allclose([tr.translation.x, tr.translation.y, tr.translation.z], T[:3, 3], atol=1e-9)
    q = matrix_to_quaternion(T[:3, :3])
    assert abs(abs(float(np.dot(q, [tr.rotation.w, tr.rotation.x, tr.rotation.y, tr.rotation.z]))) - 1) < 1e-9


def test_sqlite3_bag_reads_like_mcap(labelled_bag, tmp_path):
    """The same messages rewritten into sqlite3 storage give the same topics and labels."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = tmp_path / "sqlite_bag"
    with AnyReader([labelled_bag], default_typestore=B.typestore()) as reader, \
            Writer(out, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.SQLITE3) as writer:  # fmt: skip
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=B.typestore()) for c in reader.connections}
        for c, t, raw in reader.messages():
            writer.write(conns[c.id], t, raw)
    info = B.inspect_bag(out)
    assert info.storage == "sqlite3" and info.counts == B.inspect_bag(labelled_bag).counts
    a, b = B.read_labels(out), B.read_labels(labelled_bag)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_clouds_wait_behind_the_poses_recorded_after_them():
    """A cloud goes out after the /tf poses of the next lookahead: its transform interpolates to a later pose."""
    ms = 1_000_000
    msgs = [("/tf", "", 0, b""), ("/lidar/points", "", 10 * ms, b""), ("/tf", "", 20 * ms, b""),
            ("/tf", "", 40 * ms, b""), ("/lidar/points", "", 50 * ms, b""), ("/lidar/points", "", 60 * ms, b""),
            ("/tf", "", 900 * ms, b"")]  # fmt: skip
    out = [(m[0][1], m[2] // ms) for m in B.clouds_after_transforms(iter(msgs), "/lidar/points", 500 * ms)]
    # a cloud also goes when the next cloud comes, or when the lookahead has passed
    assert out == [("t", 0), ("t", 20), ("t", 40), ("l", 10), ("l", 50), ("l", 60), ("t", 900)]
