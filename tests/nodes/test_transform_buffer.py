"""The node's transform buffer without ROS: static and dynamic edges, chains, time stamps, waiting.

Over DDS with a real node: tests/nodes/test_tf_static.py (camera extrinsics) and
tests/nodes/test_base_frame.py (clouds brought into the base frame from /tf).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from clip2scene_ros.geometry.transforms import make_transform, pose_to_matrix, rotation_rpy, slerp
from clip2scene_ros.nodes.transform_buffer import MAX_ENTRIES, TransformBuffer, extrinsic_to_matrix

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S


def _pose(x=0.0, y=0.0, z=0.0, yaw=0.0) -> np.ndarray:
    return pose_to_matrix((x, y, z, 0.0, 0.0, yaw))


def test_static_chain_composes_through_the_common_parent():
    buf = TransformBuffer()
    base_from_lidar = extrinsic_to_matrix([1, 0, 2, 0, 0, 0, 1])
    # camera rotated 90 deg about z, 1 m to the left of base
    base_from_cam = extrinsic_to_matrix([0, 1, 0, 0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    buf.add("base_link", "lidar_top", base_from_lidar)
    buf.add("/base_link", "cam_front_optical", base_from_cam)  # a leading slash names the same frame
    lidar_from_cam = buf.lookup("lidar_top", "cam_front_optical")
    np.testing.assert_allclose(lidar_from_cam, np.linalg.inv(base_from_lidar) @ base_from_cam, atol=1e-12)
    p_cam = np.array([1.0, 0, 0, 1])  # 1 m along the camera x axis = base +y
    np.testing.assert_allclose(lidar_from_cam @ p_cam, [-1, 2, -2, 1], atol=1e-9)
    np.testing.assert_allclose(buf.lookup("base_link", "lidar_top", T0), base_from_lidar)  # static: any stamp
    assert buf.lookup("lidar_top", "nowhere") is None
    assert buf.wait_for("base_link", "", T0, 0.0) == (None, "a frame name is empty (a header without frame_id?)")
    assert buf.wait_for("lidar_top", "nowhere", T0, 0.0) == (None, "frame nowhere has no transform yet")
    buf.add("odom", "robot2", _pose(1.0))
    found, why = buf.wait_for("base_link", "robot2", T0, 0.0)
    assert found is None and why == "frames base_link and robot2 are not connected (roots base_link, odom)"


def test_tf_messages_feed_the_buffer():
    """What the node does with /tf_static and /tf messages (TransformStamped-like items)."""
    s = np.sqrt(0.5)

    def tf(parent, child, xyz, quat, stamp_ns=0):
        tr = SimpleNamespace(**dict(zip("xyz", xyz, strict=True)))
        rot = SimpleNamespace(**dict(zip("xyzw", quat, strict=True)))
        stamp = SimpleNamespace(sec=stamp_ns // S, nanosec=stamp_ns % S)
        return SimpleNamespace(header=SimpleNamespace(frame_id=parent, stamp=stamp), child_frame_id=child,
                               transform=SimpleNamespace(translation=tr, rotation=rot))  # fmt: skip

    buf = TransformBuffer()
    n = buf.add_transforms([tf("base_link", "lidar_top", (0.9, 0, 1.8), (0, 0, -s, s)),
                            tf("base_link", "cam_front_optical", (1.7, 0, 1.5), (-0.5, 0.5, -0.5, 0.5)),
                            tf("base_link", "broken", (0, 0, 0), (0, 0, 0, 0))], static=True)  # fmt: skip
    assert n == 2 and buf.lookup("base_link", "broken") is None  # a zero quaternion is no pose
    lidar_from_cam = buf.lookup("lidar_top", "cam_front_optical")
    # the camera looks along base +x; with the LiDAR yawed -90 deg that is LiDAR +y
    np.testing.assert_allclose(lidar_from_cam[:3, 2], [0, 1, 0], atol=1e-9)
    np.testing.assert_allclose(lidar_from_cam[:3, 3], [0, 0.8, -0.3], atol=1e-9)
    buf.add_transforms([tf("odom", "base_link", (1, 0, 0), (0, 0, 0, 1), T0 + 5)], static=False)
    assert buf.lookup("odom", "base_link", T0) is not None and buf.lookup("odom", "base_link", T0 - S) is None


def test_dynamic_edges_interpolate_between_the_nearest_stamps():
    buf = TransformBuffer(tolerance_s=0.0)
    buf.add("odom", "base_link", _pose(0.0, 0.0, 0.0, 0.0), T0)
    buf.add("odom", "base_link", _pose(2.0, 4.0, 0.0, 1.0), T0 + S)
    buf.add("odom", "base_link", _pose(3.0, 4.0, 0.0, 1.0), T0 + 2 * S)
    quarter = buf.lookup("odom", "base_link", T0 + S // 4)
    np.testing.assert_allclose(quarter[:3, 3], [0.5, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(quarter[:3, :3], rotation_rpy(0, 0, 0.25), atol=1e-12)  # slerp of a yaw
    np.testing.assert_allclose(buf.lookup("odom", "base_link", T0 + S), _pose(2.0, 4.0, 0.0, 1.0), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("odom", "base_link", T0 + 3 * S // 2)[:3, 3], [2.5, 4, 0], atol=1e-12)
    # the inverse direction, and the newest poses when no stamp is given
    np.testing.assert_allclose(buf.lookup("base_link", "odom", T0 + S), np.linalg.inv(_pose(2, 4, 0, 1)), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("odom", "base_link"), _pose(3.0, 4.0, 0.0, 1.0), atol=1e-12)


def test_slerp_takes_the_shorter_arc():
    q0 = np.array([1.0, 0, 0, 0])
    q1 = -np.array([np.cos(0.5), 0, 0, np.sin(0.5)])  # yaw 1 rad, sign-flipped: the same rotation
    np.testing.assert_allclose(make_transform(slerp(q0, q1, 0.5), [0, 0, 0])[:3, :3], rotation_rpy(0, 0, 0.5))
    np.testing.assert_allclose(np.linalg.norm(slerp(q0, q0, 0.3)), 1.0)


def test_no_extrapolation_beyond_the_tolerance():
    buf = TransformBuffer(tolerance_s=0.01)
    buf.add("odom", "base_link", _pose(1.0), T0)
    buf.add("odom", "base_link", _pose(2.0), T0 + S)
    # within the tolerance: the end pose, never a guess along the motion
    np.testing.assert_allclose(buf.lookup("odom", "base_link", T0 + S + S // 200), _pose(2.0))
    np.testing.assert_allclose(buf.lookup("odom", "base_link", T0 - S // 200), _pose(1.0))
    found, why = buf.wait_for("odom", "base_link", T0 + S + S // 4, 0.0)
    assert found is None and why == "odom <- base_link on /tf: newest pose 0.250 s before the stamp"
    found, why = buf.wait_for("odom", "base_link", T0 - S // 2, 0.0)
    assert found is None and why == "odom <- base_link on /tf: oldest pose kept 0.500 s after the stamp"
    one = TransformBuffer(tolerance_s=0.0)  # a single pose answers its own stamp only
    one.add("odom", "base_link", _pose(1.0), T0)
    assert one.lookup("odom", "base_link", T0) is not None and one.lookup("odom", "base_link", T0 + 1) is None


def test_static_and_dynamic_edges_mix_in_one_chain():
    """map -> odom (static), odom -> base_link (moving), base_link -> lidar (static mount)."""
    buf = TransformBuffer(tolerance_s=0.0)
    map_from_odom, base_from_lidar = _pose(10.0, 0.0, 0.0, np.pi / 2), _pose(0.9, 0.0, 1.8, -np.pi / 2)
    buf.add("map", "odom", map_from_odom)
    buf.add("base_link", "lidar_top", base_from_lidar)
    for i in range(11):  # driving along odom x at 1 m/s, 10 Hz
        buf.add("odom", "base_link", _pose(0.1 * i), T0 + i * S // 10)
    stamp = T0 + S // 4  # between the poses at 0.2 s and 0.3 s
    map_from_lidar = buf.lookup("map", "lidar_top", stamp)
    np.testing.assert_allclose(map_from_lidar, map_from_odom @ _pose(0.25) @ base_from_lidar, atol=1e-12)
    lidar_from_map = buf.lookup("lidar_top", "map", stamp)
    np.testing.assert_allclose(lidar_from_map @ map_from_lidar, np.eye(4), atol=1e-12)
    # the static part alone never depends on the stamp, the dynamic part does
    np.testing.assert_allclose(buf.lookup("base_link", "lidar_top", T0 + 100 * S), base_from_lidar)
    assert buf.lookup("map", "lidar_top", T0 + 100 * S) is None


def test_history_is_bounded_and_a_time_jump_back_restarts_it():
    buf = TransformBuffer(history_s=1.0, tolerance_s=0.0)
    for i in range(31):  # 3 s at 10 Hz: only the last second is kept
        buf.add("odom", "base_link", _pose(float(i)), T0 + i * S // 10)
    edge = buf._edges["base_link"]
    assert edge.stamps[0] == T0 + 2 * S and len(edge.stamps) == 11
    assert buf.lookup("odom", "base_link", T0 + S) is None
    np.testing.assert_allclose(buf.lookup("odom", "base_link", T0 + 25 * S // 10)[:3, 3], [25, 0, 0], atol=1e-9)
    buf.add("odom", "base_link", _pose(7.0), T0 + 25 * S // 10)  # the same stamp again: replaced, not doubled
    assert len(edge.stamps) == 11 and buf.lookup("odom", "base_link", T0 + 25 * S // 10)[0, 3] == 7.0
    buf.add("odom", "base_link", _pose(-1.0), T0)  # a bag loop: older than the whole history
    assert buf._edges["base_link"].stamps == [T0]
    np.testing.assert_allclose(buf.lookup("odom", "base_link", T0), _pose(-1.0))
    many = TransformBuffer(history_s=1e6)
    for i in range(MAX_ENTRIES + 5):  # a very high rate: the entry cap bounds memory
        many.add("odom", "base_link", _pose(float(i)), T0 + i)
    assert len(many._edges["base_link"].stamps) == MAX_ENTRIES


def test_out_of_order_poses_are_sorted_in():
    buf = TransformBuffer(tolerance_s=0.0)
    for i in (0, 2, 1, 4, 3):
        buf.add("odom", "base_link", _pose(float(i)), T0 + i * S)
    assert buf._edges["base_link"].stamps == [T0 + i * S for i in range(5)]
    np.testing.assert_allclose(buf.lookup("odom", "base_link", T0 + 7 * S // 2)[0, 3], 3.5)


def test_a_new_parent_or_kind_replaces_the_edge():
    buf = TransformBuffer()
    buf.add("base_link", "lidar", _pose(1.0))
    buf.add("mount", "lidar", _pose(2.0))  # reparented, as tf2 does: one parent per child
    assert buf.lookup("base_link", "lidar") is None and buf.lookup("mount", "lidar")[0, 3] == 2.0
    buf.add("mount", "lidar", _pose(3.0), T0)  # now moving: the static pose no longer holds
    assert buf.lookup("mount", "lidar", T0)[0, 3] == 3.0 and buf.lookup("mount", "lidar", T0 + S) is None


def test_wait_for_returns_as_soon_as_the_pose_arrives():
    """The worker's wait ends when a /tf callback adds the pose, not at the timeout."""
    buf = TransformBuffer(tolerance_s=0.0)
    buf.add("base_link", "lidar", _pose(1.0), T0)
    waiting, out = threading.Event(), []

    def worker():
        waiting.set()
        out.append(buf.wait_for("base_link", "lidar", T0 + S // 2, timeout_s=600.0))

    t = threading.Thread(target=worker)
    t.start()
    waiting.wait(60)
    buf.add("base_link", "other", _pose(5.0), T0 + S)  # an unrelated pose wakes it, it waits on
    buf.add("base_link", "lidar", _pose(2.0), T0 + S)
    t.join(60)
    assert not t.is_alive()
    found, why = out[0]
    assert why == "" and found[0, 3] == pytest.approx(1.5)
