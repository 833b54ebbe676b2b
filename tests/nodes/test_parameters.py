"""segment_node's parameter module without a node: schema, validation, run-time updates."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from clip2scene_ros.nodes import parameters as params


def _defaults(**over):
    values = {name: spec.default for name, spec in params.specs().items()}
    return {**values, **over}


def test_validate_lists_every_problem(tmp_path):
    p = _defaults(backend="tensorflow", queue_size=0, checkpoint=str(tmp_path / "nope"), cameras=["cam_front"],
                  camera_image_topic="/images", vocabulary="klingon", camera_timeout=0.0, device="tpu")  # fmt: skip
    errors = "\n".join(params.validate(p))
    for expected in ("backend='tensorflow' must be one of: torch, onnxruntime, tensorrt", "queue_size=0 must be >= 1",
                     "camera_timeout=0.0 must be > 0", "is not a directory", "must contain '{name}'",
                     "vocabulary: vocabulary 'klingon'", "device='tpu'"):  # fmt: skip
        assert expected in errors, errors


def test_descriptions_show_choices_ranges_and_when_they_apply():
    specs = params.specs()
    assert "one of: torch | onnxruntime | tensorrt" in specs["backend"].describe()
    assert ">= 1" in specs["queue_size"].describe() and "read at start" in specs["queue_size"].describe()
    assert "> 0" in specs["query.cluster_radius"].describe() and specs["query.cluster_radius"].runtime


def test_runtime_update_checks_before_anything_changes():
    p = _defaults()
    up = params.runtime_update(p, [("vocabulary_classes", ["car|sedan", "", "tree"]), ("query.cluster_radius", 1.0)])
    assert not up.error and up.values["vocabulary_classes"] == ["car|sedan", "tree"]
    assert [c.name for c in up.vocabulary.classes] == ["car", "tree"]
    assert "restart the node to change 'backend'" in params.runtime_update(p, [("backend", "onnxruntime")]).error
    assert "must be > 0" in params.runtime_update(p, [("query.cluster_radius", 0.0)]).error
    assert "vocabulary" in params.runtime_update(p, [("vocabulary", "klingon")]).error
    up = params.runtime_update(p, [("extrinsics.cam_front", [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0])])
    np.testing.assert_allclose(up.extrinsics["cam_front"][:3, 3], [1, 2, 3])
    assert "7 values" in params.runtime_update(p, [("extrinsics.cam_front", [1.0, 2.0])]).error
    assert params.runtime_update(p, [("extrinsics.cam_front", [])]).extrinsics == {"cam_front": None}


def test_lidar_pose_and_input_overrides_reach_the_segmenter_config():
    from clip2scene_ros.nodes.parameters import default_checkpoint

    p = _defaults(checkpoint=str(default_checkpoint()), lidar_pose="0 0 1.73 0 0 0.5", intensity_scale=1.0,
                  point_features=["intensity"])  # fmt: skip
    cfg = params.segmenter_config(p)
    assert cfg.lidar_pose == [0, 0, 1.73, 0, 0, 0.5] and cfg.intensity_scale == 1.0
    assert cfg.point_features == ["intensity"] and params.parse_pose("") == []
    errors = "\n".join(params.validate(_defaults(checkpoint=str(default_checkpoint()), lidar_pose="0 0 one")))
    assert "lidar_pose needs 6 finite numbers (x y z roll pitch yaw)" in errors, errors


def test_base_frame_defaults_to_a_base_link_models_frame():
    """lidar_pose wins, then base_frame; without either a base_link model brings clouds in from TF."""
    assert params.base_frame_of(_defaults(), "lidar_top") == ("", "")  # a sensor-frame model: as it always did
    frame, note = params.base_frame_of(_defaults(), "base_link")
    assert frame == "base_link" and "clouds are brought into it from TF" in note
    assert params.base_frame_of(_defaults(base_frame="base_footprint"), "base_link") == ("base_footprint", "")
    assert params.base_frame_of(_defaults(base_frame="base_link", lidar_pose="0 0 1.8 0 0 0"), "base_link") == ("", "")
    frame, note = params.base_frame_of(_defaults(use_tf=False), "base_link")
    assert frame == "" and "use_tf is false" in note
    errors = "\n".join(params.validate(_defaults(base_frame="base_link", use_tf=False, tf_timeout_s=-1.0)))
    assert "base_frame='base_link' is read from TF: set use_tf=true" in errors
    assert "tf_timeout_s=-1.0 must be >= 0" in errors
    assert params.runtime_update(_defaults(), [("tf_timeout_s", 0.5)]).values == {"tf_timeout_s": 0.5}
    history = params.runtime_update(_defaults(), [("tf_history_s", 5.0)])
    assert "restart the node to change 'tf_history_s'" in history.error


def test_sim_lidar_params_give_a_base_link_model_the_simulators_mount(tmp_path):
    from clip2scene_ros.geometry.frames import SIM_LIDAR_TOP_POSE
    from clip2scene_ros.models import create_model, save_checkpoint

    base_link = {"frame": {"name": "base_link"}}
    save_checkpoint(tmp_path / "base", create_model("minkunet18_tiny", in_features=["z"]), base_link)
    save_checkpoint(tmp_path / "sensor", create_model("minkunet18_tiny"))
    (param,) = params.sim_lidar_params(str(tmp_path / "base"))
    name, value = param.split(":=")
    assert name == "lidar_pose" and np.allclose(params.parse_pose(value), SIM_LIDAR_TOP_POSE)
    assert params.sim_lidar_params(str(tmp_path / "sensor")) == []


@pytest.mark.ros
def test_node_rejects_bad_parameters_with_clear_messages(ros_env, tmp_path):
    cmd = [sys.executable, "-m", "clip2scene_ros.nodes.segment_node", "--ros-args",
           "-p", "backend:=tensorflow", "-p", "queue_size:=0", "-p", f"checkpoint:={tmp_path / 'nope'}",
           "-p", "cameras:=[cam_front]", "-p", "camera_image_topic:=/images", "-p", "vocabulary:=klingon"]  # fmt: skip
    out = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=300)  # loaded 2-core machines
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr
    for expected in ("backend='tensorflow' must be one of", "queue_size=0 must be >= 1", "is not a directory",
                     "must contain '{name}'", "vocabulary: vocabulary 'klingon'"):  # fmt: skip
        assert expected in err, err


def test_renamed_parameter_is_still_honoured(ros_env):
    """A params file written for the old name (``use_tf_static``) keeps working: its value lands on
    ``use_tf`` (with a warning); without it nothing changes."""
    import rclpy
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        old = Node("renamed_params", context=ctx, parameter_overrides=[Parameter("use_tf_static", value=False)])
        assert params.declare(old)["use_tf"] is False
        plain = Node("plain_params", context=ctx)
        values = params.declare(plain)
        assert values["use_tf"] is True and "use_tf_static" not in values
        assert plain.get_parameter("use_tf_static").value is None
        assert "renamed to use_tf" in plain.describe_parameter("use_tf_static").description
        old.destroy_node()
        plain.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
