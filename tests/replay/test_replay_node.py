"""``clip2scene replay`` against ONE real segment_node process over DDS (started once per module).

The node's labelled clouds must give exactly the offline evaluation of the same frames with the
same checkpoint (same points -> same labels -> same confusion matrix).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
STARTUP_S = 120.0


@pytest.fixture(scope="module")
def node(small_models):
    from clip2scene_ros.nodes.node_process import NodeProcess
    from clip2scene_ros.resources import configure_ros_environment

    configure_ros_environment()
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 60))
    mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    ns = f"/c2s_replay_{os.getpid()}"
    cmd = [sys.executable, "-m", "clip2scene_ros.cli.main", "segment", "--namespace", ns,
           "--checkpoint", small_models["checkpoint"], "--teacher", small_models["teacher"]]  # fmt: skip
    for p in ("num_threads:=1", "qos.reliability:=reliable", "qos.depth:=10", "queue_size:=4",
              "diagnostics_period:=0.5"):  # fmt: skip
        cmd += ["-p", p]
    proc = NodeProcess(cmd, env)
    try:
        proc.wait_for_log(r"listening on", STARTUP_S)
        yield {"proc": proc, "name": f"{ns}/segment_node"}
    finally:
        code = proc.stop(timeout=60.0)  # a loaded machine may still be finishing a frame
        mp.undo()
        assert code in (0, -2, 130), f"node exited with {code}:\n{proc.log()[-3000:]}"


@pytest.fixture(scope="module")
def offline_segmenter(small_models):
    import torch

    from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig

    torch.set_num_threads(1)
    return Segmenter.from_config(
        SegmenterConfig(checkpoint=small_models["checkpoint"], teacher=small_models["teacher"])
    )


def _options(bag, node, **kw):
    from clip2scene_ros.replay.player import NodeOptions, ReplayOptions

    return ReplayOptions(bag=bag, node=NodeOptions(connect=node["name"]), progress=False, frame_timeout=90.0, **kw)


def test_replay_miou_equals_offline_evaluation(node, labelled_bag, offline_segmenter, tmp_path):
    from clip2scene_ros.replay.offline import evaluate_bag_offline
    from clip2scene_ros.replay.player import replay

    res = replay(_options(labelled_bag, node, queries=["a parked car"], query_top_k=100))
    assert res.sent == res.received == 3 and res.lost == 0
    off = evaluate_bag_offline(labelled_bag, offline_segmenter)
    assert off.frames == 3 and res.gt_frames == 3
    assert set(res.labels) == set(off.labels)
    for stamp, lab in off.labels.items():
        np.testing.assert_array_equal(res.labels[stamp], lab)  # node == offline, point for point
    np.testing.assert_array_equal(res.confusion.matrix, off.confusion.matrix)
    assert res.confusion.miou() == off.confusion.miou()
    assert res.confusion.matrix[1:].sum() > 50_000

    paths = res.write(tmp_path / "report")
    report = json.loads(paths["json"].read_text())
    assert report["segmentation"]["miou"] == off.confusion.to_dict()["miou"]
    assert report["latency_ms"]["count"] == 3 and report["frames"]["throughput_hz"] > 0
    assert report["queries"][0]["success"] and report["queries"][0]["matches"] == 100
    for name in ("bev.png", "query_0.png", "per_class_iou.png", "latency.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mIoU" in paths["markdown"].read_text()

    # the same frames judged against another taxonomy go through the shipped class map
    res16 = replay(_options(labelled_bag, node, gt_taxonomy="nuscenes16"))
    off16 = evaluate_bag_offline(labelled_bag, offline_segmenter, gt_taxonomy="nuscenes16")
    assert "synthetic_to_nuscenes16" in res16.mapping.how and res16.confusion.num_classes == 16
    np.testing.assert_array_equal(res16.confusion.matrix, off16.confusion.matrix)


def test_bag_without_labels_still_reports_latency_and_throughput(node, unlabelled_bag, tmp_path, capsys):
    from clip2scene_ros.cli.main import main

    code = main(["replay", str(unlabelled_bag), "--connect", node["name"], "--rate", "1.0",
                 "--out", str(tmp_path / "r"), "--no-progress", "--frame-timeout", "90"])  # fmt: skip
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["miou"] is None and line["frames_received"] == 3 and line["lost"] == 0
    assert line["throughput_hz"] > 0 and line["latency_ms_p50"] > 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["segmentation"] is None and report["rate"] == "1x real time"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Latency" in md and "no ground-truth label topic" in md and (tmp_path / "r" / "latency.png").is_file()
