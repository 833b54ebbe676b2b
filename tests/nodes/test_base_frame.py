"""segment_node brings clouds into a base_link model's frame from /tf_static + /tf (a real node over DDS).

The student records ``base_link`` as its frame and no ``base_frame`` parameter is given: the node
takes the model's frame. The LiDAR nods on a mount: base_link -> mount is static (/tf_static),
mount -> lidar_top moves (/tf). A cloud stamped between two /tf poses, the later one sent after
the cloud, must be labelled exactly as the in-process Segmenter labels it with the interpolated
mount (labels in the input's point order); a cloud in a frame nobody publishes is skipped after
``tf_timeout_s`` with a warning and a /diagnostics counter, and later clouds go on.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

STARTUP_S = 60.0
MS = 1_000_000


def _nod(pitch: float) -> np.ndarray:
    """mount_from_lidar: the LiDAR tilted about the mount's y axis."""
    from clip2scene_ros.geometry.transforms import pose_to_matrix

    return pose_to_matrix((0.0, 0.0, 0.1, 0.0, pitch, 0.0))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, new_domain_id):
    import os

    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)  # one random student every run: how much a wrong pose changes labels is then fixed
    from support.node_harness import make_test_models, running_segment_node

    from clip2scene_ros.geometry.frames import SIM_LIDAR_TOP_POSE
    from clip2scene_ros.geometry.transforms import pose_to_matrix
    from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig
    from clip2scene_ros.resources import configure_ros_environment
    from clip2scene_ros.sim import SimConfig, generate_sequence

    # the student the lead may ship: height as its only feature, 0.2 m voxels, base_link
    models = make_test_models(tmp_path_factory.mktemp("base_models"), frame="base_link", in_features=["z"],
                              voxel_size=0.2)  # fmt: skip
    seg = Segmenter.from_config(SegmenterConfig(checkpoint=models["checkpoint"], teacher=models["teacher"] or None,
                                                threads=1))  # fmt: skip
    assert seg.input.frame.name == "base_link"
    frame = next(generate_sequence(SimConfig.default().with_overrides(threads=1), seed=3, num_frames=1, cameras=False))
    points = np.ascontiguousarray(frame.points[:, :3], dtype=np.float32)
    configure_ros_environment()
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_DOMAIN_ID", new_domain_id())
    mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ns = f"/c2s_base_{os.getpid()}"
    params = {
        "input_topic": "points",
        "num_threads": "1",
        "warn_throttle": "0.0",
        "qos.reliability": "reliable",
        "qos.depth": "10",
        "queue_size": "4",
        "diagnostics_period": "0.3",
        "tf_timeout_s": "3.0",  # long enough for a pose sent after its cloud on a loaded machine
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    base_from_mount = pose_to_matrix(SIM_LIDAR_TOP_POSE)  # the simulator's LiDAR mount, yaw included
    try:
        with running_segment_node(models, params, ns, env=env, startup_s=STARTUP_S) as (proc, client):
            client.publish_tf_static([("base_link", "mount", base_from_mount)])
            yield {"proc": proc, "client": client, "ns": ns, "seg": seg, "points": points,
                   "base_from_mount": base_from_mount, "t": [1_700_000_000_000_000_000]}  # fmt: skip
    finally:
        mp.undo()


def _next_stamp(setup) -> int:
    setup["t"][0] += 100 * MS
    return setup["t"][0]


def _nodding_frame(setup) -> tuple[np.ndarray, np.ndarray]:
    """Poses 50 ms before and after the cloud (the later one sent after it): labels and the cloud's xyz."""
    from clip2scene_ros.nodes import conversions as conv

    client, t = setup["client"], _next_stamp(setup)
    client.publish_tf([("mount", "lidar_top", _nod(0.0))], t - 50 * MS)
    client.publish_points(setup["points"], t)
    client.publish_tf([("mount", "lidar_top", _nod(0.4))], t + 50 * MS)
    out = conv.cloud_to_array(client.wait_output(t, 60.0))
    return out["label"], np.stack([out["x"], out["y"], out["z"]], axis=1)


def test_model_frame_is_the_default_base_frame(setup):
    log = setup["proc"].log()
    assert log.count("the model works in base_link: clouds are brought into it from TF") == 1, log[-3000:]


def test_moving_mount_from_tf_is_applied_at_the_cloud_stamp(setup):
    labels, xyz = _nodding_frame(setup)
    np.testing.assert_array_equal(xyz, setup["points"])  # the input's points, in the input's order
    seg, points, base_from_mount = setup["seg"], setup["points"], setup["base_from_mount"]
    expected = seg.segment(points, [], base_from_mount @ _nod(0.2)).labels  # halfway between the poses
    assert (labels == expected).mean() > 0.999
    for pitch in (0.0, 0.4):  # either pose alone gives other labels: the interpolation is what matched
        agree = (seg.segment(points, [], base_from_mount @ _nod(pitch)).labels == expected).mean()
        assert agree < 0.95, agree  # 0.53 and 0.43 with this seed


def test_cloud_without_transform_is_skipped_and_later_clouds_go_on(setup):
    from support.node_harness import wait_until

    proc, client = setup["proc"], setup["client"]
    mark = proc.mark()
    t = _next_stamp(setup)
    client.publish_points(setup["points"], t, frame_id="loose_lidar")
    proc.wait_for_log(r"cloud skipped: no transform base_link <- loose_lidar at its stamp within tf_timeout_s=3 "
                      r"\(frame loose_lidar has no transform yet\)", 60.0, start=mark)  # fmt: skip

    def counted():
        kv = client.latest_diagnostics(setup["ns"])
        return kv if kv is not None and kv["frames_skipped_no_tf"] == "1" else None

    kv = wait_until(counted, 30.0)
    assert kv["frames_failed"] == "0" and t not in client.outputs
    labels, _ = _nodding_frame(setup)  # the node keeps serving
    assert len(labels) == len(setup["points"])
