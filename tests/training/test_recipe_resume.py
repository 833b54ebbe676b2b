"""benchmarks/synthetic_recipe.py keeps finished stages: a rerun of the same recipe reuses them, a
different recipe in the same folder is refused instead of being mixed in."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "synthetic_recipe.py"


def _recipe_module():
    spec = importlib.util.spec_from_file_location("synthetic_recipe", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_same_recipe_reuses_other_recipe_is_refused(tmp_path):
    m = _recipe_module()
    out = tmp_path / "recipe"
    recipe = {"pretrain_steps": 360, "finetune_steps": 60, "set": []}
    assert m.check_reusable(out, recipe, fresh=False) is False  # nothing there yet
    assert json.loads((out / "recipe.json").read_text()) == recipe
    assert m.check_reusable(out, recipe, fresh=False) is True
    with pytest.raises(SystemExit, match="differs in pretrain_steps"):
        m.check_reusable(out, {**recipe, "pretrain_steps": 180}, fresh=False)
    # --fresh starts over and records the new recipe
    assert m.check_reusable(out, {**recipe, "pretrain_steps": 180}, fresh=True) is False
    assert json.loads((out / "recipe.json").read_text())["pretrain_steps"] == 180


def test_folder_from_before_recipe_json_is_adopted(tmp_path, capsys):
    m = _recipe_module()
    out = tmp_path / "recipe"
    (out / "seed0" / "pretrain_s3" / "student").mkdir(parents=True)
    assert m.check_reusable(out, {"pretrain_steps": 360}, fresh=False) is True
    assert "reusing finished stages" in capsys.readouterr().err
    assert m.same_class_miou({"iou_camera_unseen": [10.0, None, 30.0], "iou_camera_seen": [1.0, 2.0, None]}) == 10.0
    assert m.mean_std([1.0, 3.0, None]) == {"mean": 2.0, "std": 1.41, "n": 2}


def test_seeds_run_apart_are_merged(tmp_path):
    m = _recipe_module()
    recipe = {"pretrain_steps": 360}
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, 0), (b, 2)):
        m.check_reusable(out, recipe, fresh=False)
        (out / f"seed{seed}" / "pretrain_s3" / "student").mkdir(parents=True)
        (out / f"seed{seed}" / "pretrain_s3" / "student" / "model.json").write_text("{}")
        (out / "per_seed.json").write_text(json.dumps([{"seed": seed, "student_miou_seen": 40.0 + seed}]))
    assert m.merge_seeds(b, a, recipe) is True
    assert (a / "seed2" / "pretrain_s3" / "student" / "model.json").is_file()
    assert [r["seed"] for r in json.loads((a / "per_seed.json").read_text())] == [0, 2]
    with pytest.raises(SystemExit, match="not the same recipe"):
        m.merge_seeds(b, a, {"pretrain_steps": 180})
