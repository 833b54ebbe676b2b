"""`clip2scene train soup`: the weighted mean of students of one architecture, checked members."""

import json

import numpy as np
import pytest
import torch
from clip2scene_training.soup import average_students
from safetensors.torch import save_file

from clip2scene_ros.cli.main import main
from clip2scene_ros.models import create_model, load_checkpoint, save_checkpoint

TINY = dict(width=0.125, layers=[1, 1, 1, 1, 1, 1, 1, 1], embed_dim=8, voxel_size=0.2)


def _student(path, seed, text=None, **overrides):
    torch.manual_seed(seed)
    model = create_model("minkunet18", **{**TINY, **overrides}).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
    save_checkpoint(path, model, extra={"recipe": f"run {seed}"})
    save_file({"text": torch.ones(4, 8) if text is None else text}, str(path / "text_embeddings.safetensors"))
    return model


def test_soup_is_the_weighted_mean_and_runs(tmp_path):
    a, b = _student(tmp_path / "a", 0), _student(tmp_path / "b", 1)
    assert main(["train", "soup", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "s")]) == 0
    soup, _, extra = load_checkpoint(tmp_path / "s")
    sa, sb, ss = a.state_dict(), b.state_dict(), soup.state_dict()
    for name, v in ss.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (sa[name] + sb[name]) / 2)
    assert extra["recipe"] == "run 0" and extra["soup"]["weights"] == [0.5, 0.5]
    assert (tmp_path / "s" / "text_embeddings.safetensors").is_file()
    weighted = average_students([tmp_path / "a", tmp_path / "b"], tmp_path / "w", [3, 1])
    w, _, _ = load_checkpoint(weighted)
    name = next(k for k, v in sa.items() if v.is_floating_point() and v.abs().sum() > 0)
    torch.testing.assert_close(w.state_dict()[name], 0.75 * sa[name] + 0.25 * sb[name])
    # the soup is an ordinary student: it segments a cloud
    from clip2scene_ros.inference.backends import create_backend

    pts = np.random.default_rng(0).uniform(-10, 10, (500, 4)).astype(np.float32)
    out = create_backend("torch", tmp_path / "s")(pts)
    assert out["global"].shape == (500, 8) and np.isfinite(out["global"]).all()


def test_soup_refuses_students_that_do_not_mix(tmp_path):
    _student(tmp_path / "a", 0)
    _student(tmp_path / "wide", 1, width=0.25)
    _student(tmp_path / "other_text", 2, text=torch.zeros(4, 8))
    with pytest.raises(ValueError, match="'config'"):
        average_students([tmp_path / "a", tmp_path / "wide"], tmp_path / "x")
    with pytest.raises(ValueError, match="text embeddings"):
        average_students([tmp_path / "a", tmp_path / "other_text"], tmp_path / "x")
    with pytest.raises(ValueError, match="at least two"):
        average_students([tmp_path / "a"], tmp_path / "x")
    with pytest.raises(ValueError, match="one non-negative weight"):
        average_students([tmp_path / "a", tmp_path / "a"], tmp_path / "x", [1.0])
    with pytest.raises(FileNotFoundError, match="not a student checkpoint"):
        average_students([tmp_path / "a", tmp_path / "missing"], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert json.loads((tmp_path / "a" / "model.json").read_text())["extra"] == {"recipe": "run 0"}
