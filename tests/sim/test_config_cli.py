"""Configuration validation, splits and the `clip2scene sim` command (in-process)."""

from __future__ import annotations

import json

import pytest

from clip2scene_ros.sim import SimConfig, SimConfigError
from clip2scene_ros.sim.splits import split_of, split_seeds


def test_default_config_loads_and_validates():
    cfg = SimConfig.default()
    assert cfg.lidar.beams == 32 and len(cfg.cameras.specs()) == 6
    assert cfg.with_overrides(**{"lidar.beams": 64}).lidar.beams == 64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lidar.beams": 0}, "lidar.beams"),
        ({"cameras.names": ["cam_top"]}, "unknown camera"),
        ({"lidar.vertical_fov_deg": [10, -10]}, "vertical_fov_deg"),
        ({"frame_rate_hz": 0}, "frame_rate_hz"),
        ({"lidar.nonsense": 1}, "unknown config key"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(SimConfigError, match=message):
        SimConfig.default().with_overrides(**override)


def test_section_mapping_override_updates_only_its_keys():
    """``--set data.options.sim_config.scene.X=...`` arrives as ``{"scene": {"X": ...}}`` beside
    dotted keys: it must update that key, not reset the rest of the section to defaults."""
    cfg = SimConfig.default().with_overrides(
        **{"scene.curb_height_m": [0.1, 0.2], "scene": {"terrain_rise_m": [0.0, 0.5]}, "lidar": {"beams": 64}}
    )
    assert cfg.scene.curb_height_m == (0.1, 0.2) and cfg.scene.terrain_rise_m == (0.0, 0.5)
    assert cfg.lidar.beams == 64 and cfg.lidar.max_range_m == SimConfig.default().lidar.max_range_m
    with pytest.raises(SimConfigError, match="scene.bogus"):
        SimConfig.default().with_overrides(scene={"bogus": 1})


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    p = tmp_path / "sim.yaml"
    p.write_text("lidar:\n  beamz: 32\n")
    with pytest.raises(SimConfigError, match="valid keys"):
        SimConfig.from_yaml(p)


def test_too_long_sequence_is_refused(small_config):
    from clip2scene_ros.sim import generate_sequence

    with pytest.raises(ValueError, match="scene.duration_s"):
        next(generate_sequence(small_config, 0, 1000))


def test_splits_are_disjoint_and_fixed():
    train, val, test = split_seeds("train"), split_seeds("val"), split_seeds("test")
    assert not (set(train) & set(val)) and not (set(val) & set(test)) and not (set(train) & set(test))
    assert split_seeds("val", 3) == [100000, 100001, 100002]
    assert split_of(5) == "train" and split_of(200000) == "test" and split_of(-1) is None
    with pytest.raises(ValueError, match="unknown split"):
        split_seeds("dev")


def test_cli_sim_writes_semantickitti(tmp_path, capsys, o3d_available):
    from clip2scene_ros.cli.main import main

    rc = main(["sim", "--out", str(tmp_path), "--format", "semantickitti", "--seed", "4", "--frames", "2",
               "--width", "64", "--height", "48", "--no-progress", "--preview", str(tmp_path / "p.png")])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["seeds"] == [4] and summary["format"] == "semantickitti"
    assert len(list((tmp_path / "sequences" / "04" / "velodyne").glob("*.bin"))) == 2
    import cv2

    sheet = cv2.imread(str(tmp_path / "p.png"))
    assert sheet is not None and sheet.shape[0] > 400 and sheet.std() > 10


def test_cli_sim_bad_override_fails_cleanly(tmp_path, caplog):
    from clip2scene_ros.cli.main import main

    rc = main(["sim", "--out", str(tmp_path), "--set", "lidar.beams=0", "--no-progress"])
    assert rc == 2
    assert "lidar.beams" in caplog.text
