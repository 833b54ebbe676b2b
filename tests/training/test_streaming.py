"""Streaming pre-training: the target cache (`clip2scene prepare targets`) on a nuScenes-layout
dataset written by the simulator, damaged samples skipped and summarised, TensorBoard event files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from clip2scene_training.config import PretrainConfig, load_config

TEACHER = {"model": "c2s-tiny-vit-p16", "random_init": True, "vocabulary": "synthetic"}


@pytest.fixture(scope="module")
def nuscenes_root(tmp_path_factory):
    pytest.importorskip("open3d")
    from clip2scene_ros.sim import SimConfig
    from clip2scene_ros.sim.writers import write_dataset

    cfg = SimConfig.default().with_overrides(
        **{"cameras.width": 160, "cameras.height": 96, "lidar.points_per_ring": 120, "threads": 1}
    )
    root = tmp_path_factory.mktemp("nus")
    write_dataset("nuscenes", root, cfg, [5, 6], 5, keyframe_every=2, lead_in=2, progress=False)
    return root


def _cfg(root, tmp_path, **kw) -> dict:
    cfg = {
        "out_dir": str(tmp_path / "run"), "model": "minkunet18_tiny", "batch_size": 1, "grad_accum": 2,
        "max_steps": 2, "checkpoint_every": 1, "num_threads": 1, "progress": False, "augment": False,
        "data": {"kind": "nuscenes", "options": {"root": str(root), "version": "v1.0-trainval", "num_sweeps": 2},
                 "pairing": {"min_depth": 1.0}},
        "teacher": TEACHER, "optim": {"lr": 0.05},
        "targets": {"cache_dir": str(tmp_path / "cache"), "workers": 2}, "loader": {"workers": 0},
    }  # fmt: skip
    cfg.update(kw)
    return cfg


def _prepare(path, capsys) -> dict:
    from clip2scene_ros.cli.main import main

    assert main(["prepare", "targets", "--config", str(path), "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_prepare_targets_resumes_and_skips_damaged_samples(nuscenes_root, tmp_path, capsys, caplog):
    from clip2scene_training.pretrain import train

    from clip2scene_ros.datasets import create_dataset

    root = tmp_path / "nus"
    import shutil

    shutil.copytree(nuscenes_root, root)
    ds = create_dataset("nuscenes", None, root=str(root), version="v1.0-trainval")
    assert len(ds) == 4
    lidar0 = root / ds.key_data[ds.samples[0]["token"]]["LIDAR_TOP"]["filename"]
    lidar0.write_bytes(lidar0.read_bytes()[:7])  # truncated .pcd.bin
    cam1 = root / ds.key_data[ds.samples[1]["token"]]["CAM_FRONT"]["filename"]
    cam1.unlink()  # missing image
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(_cfg(root, tmp_path)))

    first = _prepare(path, capsys)
    assert first["samples"] == 4 and first["prepared"] == 2 and first["skipped"]["count"] == 2
    assert "ValueError" in first["skipped"]["samples"]["0"] and "FileNotFoundError" in first["skipped"]["samples"]["1"]
    assert first["bytes_per_sample"] > 1000 and first["s_per_sample"] > 0
    again = _prepare(path, capsys)  # resumable: done samples are not recomputed
    assert again["already_done"] == 2 and again["prepared"] == 0 and again["skipped"]["count"] == 2

    # a damaged cache entry is recomputed from the raw sample; the damaged raw samples are skipped
    from clip2scene_training.target_cache import TargetCache

    cache = TargetCache(tmp_path / "cache", first["cache"].rsplit("/", 1)[-1])
    good = cache.path(2)
    size = good.stat().st_size
    good.write_bytes(good.read_bytes()[: size // 2])
    summary = train(load_config(PretrainConfig, path))
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    assert summary["skipped_samples"]["count"] == 2 and set(summary["skipped_samples"]["samples"]) == {"0", "1"}
    assert good.stat().st_size == size
    assert "sample 0 skipped" in caplog.text

    # repaired raw files: the rerun prepares only the two missing samples; a complete cache then
    # trains without the raw dataset at all
    for rel in (lidar0, cam1):
        shutil.copy(nuscenes_root / rel.relative_to(root), rel)
    last = _prepare(path, capsys)
    assert last["already_done"] == 2 and last["prepared"] == 2 and last["skipped"]["count"] == 0
    root.rename(tmp_path / "raw_moved_away")
    summary = train(load_config(PretrainConfig, path, ["out_dir=" + str(tmp_path / "run2")]))
    assert summary["steps"] == 2 and summary["skipped_samples"]["count"] == 0


def test_event_files_hold_the_logged_scalars(tmp_path):
    from clip2scene_training.tbevents import EventWriter, crc32c, read_scalars

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    w = EventWriter(tmp_path)
    w.add_scalars({"loss": 0.5, "lr": 0.1}, 1)
    w.add_scalars({"loss": 0.25}, 2)
    w.close()
    assert read_scalars(w.path) == [(1, "loss", 0.5), (1, "lr", pytest.approx(0.1)), (2, "loss", 0.25)]
