"""sync.policy=approximate_time: message_filters' ApproximateTimeSynchronizer over DDS (a real node
process), including a camera that never publishes: the LiDAR output must go on without it, and
once every camera publishes, frames are fused from synchronised sets."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAMS = ("cam_front", "cam_back")  # cam_back is silent at first; later it repeats cam_front's image
STARTUP_S = 120.0


@pytest.fixture(scope="module")
def node(tmp_path_factory, new_domain_id):
    pytest.importorskip("message_filters", reason="message_filters is not installed (scripts/setup.sh kit)")
    import torch

    torch.set_num_threads(1)
    from support.node_harness import SyntheticFrames, make_test_models, running_segment_node

    from clip2scene_ros.resources import configure_ros_environment

    models = make_test_models(tmp_path_factory.mktemp("approx_models"))
    frames = SyntheticFrames(CAMS[0], num_frames=1)
    configure_ros_environment()
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_DOMAIN_ID", new_domain_id())
    mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ns = f"/c2s_approx_{os.getpid()}"
    extr = "[" + ",".join(f"{v:.9f}" for v in frames.lidar_from_cam.reshape(-1)) + "]"
    params = {
        "input_topic": "points",
        "camera_image_topic": "camera/{name}/image_raw",
        "camera_info_topic": "camera/{name}/camera_info",
        "cameras": f"[{','.join(CAMS)}]",
        **{f"extrinsics.{c}": extr for c in CAMS},
        "sync.policy": "approximate_time",
        "sync.tolerance": "0.05",
        "camera_timeout": "0.5",
        "fusion": "true",
        "num_threads": "1",
        "qos.reliability": "reliable",
        "diagnostics_period": "0.3",
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    try:
        with running_segment_node(models, params, ns, cameras=list(CAMS), env=env, startup_s=STARTUP_S) as (
            proc,
            client,
        ):
            yield {"proc": proc, "client": client, "ns": ns, "frames": frames}
    finally:
        mp.undo()


def _send(node, cameras: tuple[str, ...]):
    from support.node_harness import wait_until

    client, frames = node["client"], node["frames"]
    t, f = frames.next()
    for cam in cameras:
        client.publish_image(cam, f.cameras[0].image, f.cameras[0].K, t + 5_000_000, frame_id=f"{cam}_optical")
    client.publish_points(f.points, t)
    out = client.wait_output(t, 30.0)
    done = len(client.outputs)

    def counted():
        kv = client.latest_diagnostics(node["ns"])
        return kv if kv is not None and int(kv["frames_out"]) >= done else None

    return out, wait_until(counted, 10.0)


def test_a_silent_camera_does_not_stop_the_lidar_output(node):
    from clip2scene_ros.nodes import conversions as conv

    proc = node["proc"]
    for _ in range(3):
        out, kv = _send(node, CAMS[:1])  # cam_back never publishes
    labels = conv.cloud_to_array(out)["label"]
    assert (labels > 0).mean() > 0.9
    assert int(kv["cameras_fused_last"]) == 1  # cam_front, from its buffered image
    proc.wait_for_log(r"camera 'cam_back' never published", 20.0)


def test_synchronised_sets_fuse_every_camera_once_all_publish(node):
    fused = []
    for _ in range(4):
        _, kv = _send(node, CAMS)
        fused.append(int(kv["cameras_fused_last"]))
    assert fused[-1] == 2, fused
    assert np.isfinite(float(node["client"].latest_diagnostics(node["ns"])["latency_ms_p50"]))
