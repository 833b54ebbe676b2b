"""A base_link student through ``clip2scene replay`` and ``clip2scene demo`` (real node processes over DDS).

The simulator's bags carry /tf_static base_link -> lidar_top and /tf map -> base_link. The student
records base_link as its frame and the node gets no frame parameter: it takes the model's frame
and the mounting from the replayed /tf_static. Every cloud must come back labelled exactly as the
offline evaluation labels it, which brings the clouds into base_link from the same bag.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def base_student(tmp_path_factory) -> dict[str, str]:
    import torch
    from support.node_harness import make_test_models

    torch.set_num_threads(1)
    torch.manual_seed(0)
    # the student the lead may ship: height as its only feature, 0.2 m voxels, base_link
    return make_test_models(tmp_path_factory.mktemp("base_student"), frame="base_link", in_features=["z"],
                            voxel_size=0.2)  # fmt: skip


def test_replay_brings_clouds_into_the_models_base_frame(base_student, labelled_bag, drive_frames, ros_env):
    from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig
    from clip2scene_ros.replay.offline import evaluate_bag_offline
    from clip2scene_ros.replay.player import NodeOptions, ReplayOptions, replay

    teacher = base_student["teacher"] or None
    node = NodeOptions(checkpoint=base_student["checkpoint"], teacher=teacher, params=["num_threads:=1"])
    res = replay(ReplayOptions(bag=labelled_bag, node=node, progress=False, frame_timeout=90.0))
    assert res.sent == res.received == 3 and res.lost == 0

    seg = Segmenter.from_config(SegmenterConfig(checkpoint=base_student["checkpoint"], teacher=teacher, threads=1))
    off = evaluate_bag_offline(labelled_bag, seg)
    assert off.frames == 3 and set(res.labels) == set(off.labels)
    for stamp, lab in off.labels.items():
        np.testing.assert_array_equal(res.labels[stamp], lab)  # node == offline, point for point
    # offline used the bag's mounting; the clouds taken as if already in base_link label otherwise
    first = off.labels[min(off.labels)]
    points = np.ascontiguousarray(drive_frames[0].points[:, :3], dtype=np.float32)
    mounted = seg.segment(points, [], drive_frames[0].lidar_to_ego).labels  # the bag's pose went through a quaternion
    assert (mounted == first).mean() > 0.999
    assert (seg.segment(points).labels == first).mean() < 0.9


def test_demo_runs_a_base_link_student(base_student, ros_env, tmp_path, capsys):
    from clip2scene_ros.cli.main import main

    argv = ["demo", "--out", str(tmp_path / "demo"), "--frames", "2", "--realtime-rate", "0", "--no-progress",
            "--checkpoint", base_student["checkpoint"], "--query", "a tree", "-p", "num_threads:=1"]  # fmt: skip
    if base_student["teacher"]:
        argv += ["--teacher", base_student["teacher"]]
    assert main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["frames"] == 2 and line["lost"] == 0 and line["miou"] is not None


def test_clouds_without_transform_are_reported_not_waited_for(base_student, labelled_bag, ros_env, tmp_path):
    """The bag has no transform into 'chassis': the node skips every cloud, the replay moves on at the
    node's diagnostics instead of waiting frame_timeout for labels, and the report says why."""
    from clip2scene_ros.replay.player import NodeOptions, ReplayOptions, replay

    params = ["num_threads:=1", "base_frame:=chassis", "tf_timeout_s:=0.2", "diagnostics_period:=0.2"]
    node = NodeOptions(checkpoint=base_student["checkpoint"], teacher=base_student["teacher"] or None, params=params)
    res = replay(ReplayOptions(bag=labelled_bag, node=node, progress=False, frame_timeout=120.0))
    assert res.sent == 3 and res.received == 0 and res.node_skipped_no_tf == 3
    md = res.write(tmp_path / "r")["markdown"].read_text()
    assert "The node skipped 3 clouds: no transform from the cloud's frame into the model's base frame" in md
