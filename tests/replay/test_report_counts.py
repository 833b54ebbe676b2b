"""Replay reports count frames without output explicitly: the mIoU is over the frames that came back,
the lost ones are reported beside it; the demo's real-time run has its own section."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip2scene_ros.evaluation.metrics import ConfusionMatrix
from clip2scene_ros.evaluation.report import markdown
from clip2scene_ros.replay.bag import BagInfo
from clip2scene_ros.replay.player import ReplayOptions, ReplayResult


def _result(sent: int, received: int, gt_sent: int, gt_frames: int) -> ReplayResult:
    conf = ConfusionMatrix(["road", "car"])
    conf.update(np.array([1, 1, 2, 0]), np.array([1, 2, 2, 1]))
    info = BagInfo(Path("drive_bag"), "mcap", {"/lidar/points": "sensor_msgs/msg/PointCloud2"},
                   {"/lidar/points": sent}, 0, int(1e9))  # fmt: skip
    res = ReplayResult(
        options=ReplayOptions(bag=Path("drive_bag"), rate=1.0), info=info, sent=sent, received=received,
        latencies_ms=[100.0] * received, wall_s=1.0, node_name="/segment_node", vocabulary="synthetic",
        legend={}, node_drops=sent - received, confusion=conf, mapping=None, labels={}, bev=None,
        queries=[], query_plots=[],
    )  # fmt: skip
    res.gt_frames, res.gt_sent = gt_frames, gt_sent
    return res


def test_lost_frames_are_counted_next_to_the_miou():
    summary = _result(sent=10, received=7, gt_sent=10, gt_frames=7).summary()
    assert summary["frames"]["lost"] == 3
    seg = summary["segmentation"]
    assert seg["frames"] == 7 and seg["frames_with_gt_sent"] == 10 and seg["frames_without_output"] == 3
    text = markdown(summary, {})
    assert "7 frames that came back labelled" in text and "3 of 10 labelled frames sent produced no output" in text
    # nothing lost: no lost sentence
    assert "produced no output" not in markdown(_result(5, 5, 5, 5).summary(), {})


def test_real_time_section():
    summary = _result(sent=10, received=10, gt_sent=10, gt_frames=10).summary()
    summary["realtime"] = {"rate": "1x real time", "sent": 60, "received": 21, "lost": 39, "node_drops": 39,
                           "latency_ms": {"p50": 700.0, "p95": 1300.0}, "miou": 30.5}  # fmt: skip
    text = markdown(summary, {})
    assert "## Real time (1x real time)" in text and "| 60 | 21 | 39 | 39 | 700.00 | 1300.00 | 30.50 |" in text
