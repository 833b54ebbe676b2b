"""segment_node reads camera extrinsics from /tf_static (a real node process over DDS).

The camera has no ``extrinsics.<camera>`` parameter: until a static transform LiDAR <- camera is
latched on /tf_static, fusion skips the camera with a warning; after it, the camera's features are
fused into the points it sees (reported on /diagnostics). tf2_msgs comes from a ROS install or
from the subset scripts/setup.sh builds into the venv.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAM = "cam_front"
STARTUP_S = 60.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from support.node_harness import SyntheticFrames, make_test_models, running_segment_node

    from clip2scene_ros.resources import configure_ros_environment

    models = make_test_models(tmp_path_factory.mktemp("tf_models"))
    frames = SyntheticFrames(CAM, num_frames=1)  # every send repeats the same sensor data
    configure_ros_environment()
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))  # not the other node modules' domains
    mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ns = f"/c2s_tf_{os.getpid()}"
    params = {
        "input_topic": "points",
        "camera_image_topic": "camera/{name}/image_raw",
        "camera_info_topic": "camera/{name}/camera_info",
        "cameras": f"[{CAM}]",
        "fusion": "true",
        "use_tf": "true",
        "num_threads": "1",
        "warn_throttle": "0.0",
        "qos.reliability": "reliable",
        "diagnostics_period": "0.3",
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    try:
        with running_segment_node(models, params, ns, cameras=[CAM], env=env, startup_s=STARTUP_S) as (proc, client):
            yield {"proc": proc, "client": client, "ns": ns, "frames": frames}
    finally:
        mp.undo()


def _frame(setup) -> tuple[dict[str, str], np.ndarray]:
    """Send camera + cloud, wait for the labelled cloud and the diagnostics that counted it."""
    from support.node_harness import wait_until

    from clip2scene_ros.nodes import conversions as conv

    client, frames = setup["client"], setup["frames"]
    t, f = frames.next()
    cam = f.cameras[0]
    client.publish_image(CAM, cam.image, cam.K, t)
    client.publish_points(f.points, t)
    out = client.wait_output(t, 30.0)
    done = len(client.outputs)

    def counted():
        kv = client.latest_diagnostics(setup["ns"])
        return kv if kv is not None and int(kv["frames_out"]) >= done else None

    return wait_until(counted, 10.0), conv.cloud_to_array(out)["score"]


def test_extrinsics_come_from_tf_static(setup):
    proc, client, frames = setup["proc"], setup["client"], setup["frames"]
    mark = proc.mark()
    # on busy cores the image can reach the node after its cloud (the camera is then late, not
    # missing a transform): send the pair again until a cloud found the image and warned
    for _ in range(5):
        kv, scores_without = _frame(setup)
        try:
            proc.wait_for_log(r"no transform lidar_top <- cam_front_optical", 3.0, start=mark)
            break
        except TimeoutError:
            continue
    proc.wait_for_log(r"no transform lidar_top <- cam_front_optical", 1.0, start=mark)
    assert kv["cameras_fused_last"] == "0" and kv["points_fused_last"] == "0"

    # the sim's LiDAR <- camera transform, through base_link as a robot's URDF would give it
    f = frames.frames[0]
    client.publish_tf_static(
        [("base_link", "lidar_top", f.lidar_to_ego), ("base_link", f"{CAM}_optical", f.cameras[0].cam_to_ego)]
    )
    from support.node_harness import wait_until

    def fused():
        kv, scores = _frame(setup)
        return (kv, scores) if kv["cameras_fused_last"] == "1" else None

    kv, scores_with = wait_until(fused, 30.0, interval=0.0)  # the latched message may take a moment
    assert int(kv["points_fused_last"]) > 100
    # fusion changed the points the camera sees, not the others
    changed = ~np.isclose(scores_with, scores_without, atol=1e-6)
    assert 100 < changed.sum() <= int(kv["points_fused_last"])
