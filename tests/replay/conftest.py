"""Replay fixtures: short synthetic drives as real rosbag2 files, and small real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CAM = "cam_front"


def sim_config(**extra):
    from clip2scene_ros.sim import SimConfig

    return SimConfig.default().with_overrides(
        **{"cameras.names": [CAM], "cameras.width": 160, "cameras.height": 96, "threads": 1, **extra}
    )


@pytest.fixture(scope="session")
def small_sim_config():
    return sim_config()


@pytest.fixture(scope="session")
def drive_frames():
    """Three frames of one synthetic drive (LiDAR + one small camera)."""
    from clip2scene_ros.sim import generate_sequence

    return list(generate_sequence(sim_config(), seed=11, num_frames=3))


@pytest.fixture(scope="session")
def labelled_bag(drive_frames, tmp_path_factory) -> Path:
    from clip2scene_ros.sim.writers.rosbag import write_rosbag

    return write_rosbag(drive_frames, tmp_path_factory.mktemp("bags") / "labelled")


@pytest.fixture(scope="session")
def unlabelled_bag(drive_frames, tmp_path_factory) -> Path:
    from clip2scene_ros.sim.writers.rosbag import write_rosbag

    return write_rosbag(drive_frames, tmp_path_factory.mktemp("bags") / "unlabelled", with_labels=False)


@pytest.fixture(scope="session")
def small_models(tmp_path_factory) -> dict[str, str]:
    """The shipped student and its teacher when present, else tiny random-weight real models."""
    import torch
    from safetensors.torch import save_file

    from clip2scene_ros.models import create_model, save_checkpoint
    from clip2scene_ros.nodes.parameters import default_checkpoint
    from clip2scene_ros.teacher import create_teacher
    from clip2scene_ros.teacher.loading import ASSET_DIR, CONFIG_FILENAME

    torch.set_num_threads(1)
    student = default_checkpoint()
    if (student / "model.safetensors").is_file():
        # the teacher the student was distilled from ships next to it; else the default teacher
        paired = student / "teacher"
        teacher = paired if (paired / CONFIG_FILENAME).is_file() else ASSET_DIR
        if (teacher / CONFIG_FILENAME).is_file():
            return {"teacher": str(teacher), "checkpoint": str(student)}
    root = tmp_path_factory.mktemp("replay_models")
    cfg_path = REPO / "clip2scene_ros" / "teacher" / "model_configs" / "c2s-tiny-vit-p16.json"
    teacher = create_teacher(str(cfg_path), random_init=True)
    (root / "teacher").mkdir()
    (root / "teacher" / CONFIG_FILENAME).write_text(json.dumps({"model_cfg": json.loads(cfg_path.read_text())}))
    state = {k: v.detach().clone().contiguous() for k, v in teacher.model.state_dict().items()}
    save_file(state, str(root / "teacher" / "model.safetensors"))
    dim = int(teacher.encode_text(["x"]).shape[1])
    torch.manual_seed(0)
    save_checkpoint(root / "student", create_model("minkunet18_tiny", embed_dim=dim))
    return {"teacher": str(root / "teacher"), "checkpoint": str(root / "student")}
