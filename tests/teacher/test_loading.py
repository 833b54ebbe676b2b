"""Offline loading: local weights in every supported format, and errors that say what to do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clip2scene_ros.teacher import TeacherLoadError, create_teacher, list_model_configs, load_open_clip


def test_missing_weights_for_architecture_explains_how_to_supply_them():
    with pytest.raises(TeacherLoadError) as err:
        load_open_clip("ViT-B/16")
    msg = str(err.value)
    assert "ViT-B-16" in msg and "weights=" in msg and "--teacher-weights" in msg
    assert "No weights are downloaded" in msg


def test_nonexistent_weights_file(tmp_path):
    with pytest.raises(TeacherLoadError, match="does not exist"):
        load_open_clip("ViT-B-16", weights=tmp_path / "nope.bin")


def test_unknown_model_lists_alternatives():
    with pytest.raises(TeacherLoadError, match="open_clip.list_models"):
        load_open_clip("ViT-Q-99")


def test_directory_without_config(tmp_path):
    with pytest.raises(TeacherLoadError, match="open_clip_config.json"):
        load_open_clip(tmp_path)


def test_bad_json_config(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"vision_cfg": {}}))
    with pytest.raises(TeacherLoadError, match="embed_dim"):
        load_open_clip(path, random_init=True)


def test_bundled_configs_listed():
    assert {"c2s-tiny-vit-p8", "c2s-test-vit"} <= set(list_model_configs())


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pt"])
def test_weights_roundtrip_all_formats(tmp_path, suffix):
    torch.manual_seed(1)
    src = load_open_clip("c2s-test-vit", random_init=True)
    state = src.model.state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:  # a plain state dict, optionally wrapped and DataParallel-prefixed as training scripts do
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    torch.manual_seed(2)
    dst = load_open_clip("c2s-test-vit", weights=path)
    for key, value in state.items():
        assert torch.equal(dst.model.state_dict()[key], value), key
    assert dst.weights_path == path


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": np.random.default_rng(0)}, path)
    with pytest.raises(TeacherLoadError, match="weights_only=True"):
        load_open_clip("c2s-test-vit", weights=path)


def test_mismatched_weights_name_the_architecture(tmp_path):
    from safetensors.torch import save_file

    save_file({"visual.conv1.weight": torch.zeros(3, 3, 4, 4)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(TeacherLoadError, match="do not match the architecture"):
        load_open_clip("c2s-test-vit", weights=tmp_path / "w.safetensors")


def test_local_dir_layout_with_teacher_defaults(tmp_path):
    from safetensors.torch import save_file

    from clip2scene_ros.teacher.loading import CONFIG_DIR

    src = load_open_clip("c2s-test-vit", random_init=True)
    save_file(
        {k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "model.safetensors")
    )
    cfg = json.loads((CONFIG_DIR / "c2s-test-vit.json").read_text())
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "clip2scene": {"input_size": [64, 192], "tile": [64, 96]}})
    )
    teacher = create_teacher(tmp_path)
    assert teacher.config.input_size == (64, 192) and teacher.config.tile == (64, 96)
    assert teacher.model_id == src.model_id().replace(src.name, tmp_path.name)
