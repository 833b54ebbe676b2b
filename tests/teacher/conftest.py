"""Teacher test fixtures: one thread, an isolated cache directory, tiny random-weight models."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("CLIP2SCENE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tiny_teacher():
    from clip2scene_ros.teacher import create_teacher

    torch.manual_seed(0)
    return create_teacher("c2s-test-vit", random_init=True, input_size=(64, 96))
