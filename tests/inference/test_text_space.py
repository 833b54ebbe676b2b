"""A checkpoint is only used with the teacher whose text space it was distilled into."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig
from clip2scene_ros.inference.text_space import TextSpaceMismatch
from clip2scene_ros.nodes.parameters import default_checkpoint
from clip2scene_ros.teacher import create_teacher
from clip2scene_ros.teacher.loading import CONFIG_FILENAME

SHIPPED = default_checkpoint()
needs_shipped = pytest.mark.skipif(not (SHIPPED / "model.json").is_file(), reason="no shipped student")


def _random_teacher_dir(root: Path) -> Path:
    """A teacher of the shipped architecture (same embedding size) with random weights."""
    import clip2scene_ros.teacher as teacher_pkg

    cfg_path = Path(teacher_pkg.__file__).parent / "model_configs" / "c2s-tiny-vit-p4.json"
    torch.manual_seed(123)
    other = create_teacher(str(cfg_path), random_init=True)
    dest = root / "other_teacher"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / CONFIG_FILENAME).write_text(json.dumps({"model_cfg": json.loads(cfg_path.read_text())}))
    save_file({k: v.detach().clone().contiguous() for k, v in other.model.state_dict().items()},
              str(dest / "model.safetensors"))  # fmt: skip
    return dest


@needs_shipped
def test_shipped_student_with_another_teacher_of_the_same_size_is_refused(tmp_path):
    other = _random_teacher_dir(tmp_path)
    cfg = SegmenterConfig(checkpoint=str(SHIPPED), teacher=str(other), vocabulary=["road", "car"])
    with pytest.raises(TextSpaceMismatch) as e:
        Segmenter.from_config(cfg)
    msg = str(e.value)
    assert "'default'" in msg and str(other) in msg and "fingerprint" in msg
    # its own teacher is accepted
    Segmenter.from_config(SegmenterConfig(checkpoint=str(SHIPPED), vocabulary=["road", "car"]))


@needs_shipped
def test_a_recorded_fingerprint_is_compared_first(tmp_path):
    ckpt = tmp_path / "student"
    shutil.copytree(SHIPPED, ckpt)
    meta = json.loads((ckpt / "model.json").read_text())
    meta["extra"]["text_space"] = "c2s-tiny-0123456789abcdef"
    (ckpt / "model.json").write_text(json.dumps(meta))
    with pytest.raises(TextSpaceMismatch, match="fingerprint c2s-tiny-0123456789abcdef.*teacher 'default'"):
        Segmenter.from_config(SegmenterConfig(checkpoint=str(ckpt), vocabulary=["road"]))
    meta["extra"]["text_space"] = create_teacher("default").model_id
    (ckpt / "model.json").write_text(json.dumps(meta))
    Segmenter.from_config(SegmenterConfig(checkpoint=str(ckpt), vocabulary=["road"]))
