"""Trainer: config validation, a tiny pre-training run, resume after SIGKILL, DDP (gloo, 2 processes)
against one process with the same global batch, fine-tuning and evaluation reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from clip2scene_training.config import ConfigError, EvaluateConfig, FinetuneConfig, PretrainConfig, load_config
from clip2scene_training.trainer import read_metrics

DATA = {
    "kind": "synthetic",
    "options": {
        "split": "train", "num_scenes": 1, "key_frames_per_scene": 2, "num_sweeps": 2,
        "sim_config": {"lidar.points_per_ring": 120, "cameras.width": 160, "cameras.height": 96,
                       "cameras.names": ["cam_front", "cam_back"]},
    },
}  # fmt: skip
TEACHER = {"model": "c2s-tiny-vit-p16", "random_init": True, "vocabulary": "synthetic"}


def _pretrain_cfg(out: Path, **kw) -> dict:
    cfg = {
        "out_dir": str(out),
        "model": "minkunet18_tiny",
        "batch_size": 1,
        "grad_accum": 2,
        "max_steps": 2,
        "checkpoint_every": 1,
        "num_threads": 1,
        "progress": False,
        "data": DATA,
        "teacher": TEACHER,
        "optim": {"lr": 0.05},
        "loader": {"workers": 0},
        "targets": {"cache_dir": None},  # the teacher runs for every sample (no cache)
    }
    cfg.update(kw)
    return cfg


def _run(args: list[str], env_extra: dict | None = None, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process run: batch 1 x accumulation 2 (global batch 2), 2 steps."""
    from clip2scene_training.pretrain import train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref")
    summary = train(load_config(PretrainConfig, _pretrain_cfg(out)))
    return out, summary


def test_config_validation_messages(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bogus'\]"):
        load_config(PretrainConfig, {"bogus": 1})
    with pytest.raises(ConfigError, match="loss.semantic='kl'"):
        load_config(PretrainConfig, {"loss": {"semantic": "kl"}})
    with pytest.raises(ConfigError, match="loss.tau: expected float"):
        load_config(PretrainConfig, {"loss": {"tau": "high"}})
    with pytest.raises(ConfigError, match="loss.reduction must be 'sum'"):
        load_config(PretrainConfig, {"loss": {"reduction": "avg"}})
    with pytest.raises(ConfigError, match="label_fraction=2"):
        load_config(FinetuneConfig, {"label_fraction": 2.0})
    with pytest.raises(ConfigError, match="not found"):
        load_config(PretrainConfig, "no_such_config")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"loss": {"tau": 0.07}}))
    cfg = load_config(PretrainConfig, path, ["loss.spatial_temporal=point_only", "max_steps=5"])
    assert cfg.loss.tau == 0.07 and cfg.loss.spatial_temporal == "point_only" and cfg.max_steps == 5
    for name, cls in (
        ("pretrain_synthetic", PretrainConfig),
        ("finetune_synthetic", FinetuneConfig),
        ("evaluate_synthetic", EvaluateConfig),
        ("pretrain_real", PretrainConfig),
    ):
        load_config(cls, name)  # shipped configs are valid
    from clip2scene_ros.sim import SimConfig

    real = load_config(PretrainConfig, "pretrain_real").data.options["sim_config"]
    sim = SimConfig.default().with_overrides(**real)  # the recipe's simulator keys all exist and validate
    assert sim.scene.terrain_roughness_m[1] > sim.scene.paved_roughness_m[1] > 0


def test_precision_policy():
    from clip2scene_training.trainer import cpu_has_native_bf16, resolve_amp

    assert resolve_amp("auto", "cuda:0") == (torch.float16, True)  # fp16 always with a GradScaler
    assert resolve_amp("fp16", "cpu") == (torch.float16, True)
    assert resolve_amp("bf16", "cpu") == (torch.bfloat16, False)
    assert resolve_amp("off", "cuda") == (None, False)
    assert resolve_amp("auto", "cpu") == ((torch.bfloat16, False) if cpu_has_native_bf16() else (None, False))
    with pytest.raises(ConfigError, match="quote it"):
        load_config(PretrainConfig, {"amp": False})  # YAML `amp: off`


def test_pretrain_run_outputs(reference):
    out, summary = reference
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2] and summary["steps"] == 2
    assert all(np.isfinite(float(r["loss"])) and int(float(r["pairs"])) > 0 for r in rows)
    assert (out / "student" / "model.safetensors").is_file()
    assert (out / "student" / "text_embeddings.safetensors").is_file()
    assert (out / "checkpoints" / "latest").read_text() == "step_0000002"
    from clip2scene_training.tbevents import read_scalars

    (events,) = (out / "tensorboard").glob("events.out.tfevents.*")
    logged = {(step, tag): v for step, tag, v in read_scalars(events)}
    assert logged[(2, "loss")] == pytest.approx(float(rows[1]["loss"]), rel=1e-6)
    assert (1, "rss_mb") in logged and (1, "samples_per_s") in logged


def test_pretrain_init_warm_starts_from_a_student(reference, tmp_path):
    """``init``: a new run starts from a student's weights (a run at a negligible learning rate ends
    with the student it started from), and a student of another architecture is refused by name.
    Checkpoints of a base_link run record that frame."""
    from clip2scene_training.pretrain import train

    from clip2scene_ros.models import load_checkpoint

    out, _ = reference
    warm = tmp_path / "warm"
    base_link = {**DATA, "options": {**DATA["options"], "frame": "base_link"}}
    train(load_config(PretrainConfig, _pretrain_cfg(warm, init=str(out / "student"), max_steps=1, optim={"lr": 1e-9},
                                                    data=base_link)))  # fmt: skip
    for saved in (warm / "student", warm / "checkpoints" / "step_0000001"):  # both name their input frame
        assert json.loads((saved / "model.json").read_text())["input"]["frame"]["name"] == "base_link"
    a, b = load_checkpoint(out / "student")[0].state_dict(), load_checkpoint(warm / "student")[0].state_dict()
    learned = [k for k in a if "running" not in k and "num_batches" not in k]  # BN statistics move anyway
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in learned)
    with pytest.raises(ValueError, match="not this architecture"):
        train(load_config(PretrainConfig, _pretrain_cfg(tmp_path / "x", init=str(out / "student"),
                                                        model_overrides={"width": 0.5})))  # fmt: skip


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(reference, tmp_path):
    ref_out, _ = reference
    cfg = tmp_path / "cfg.yaml"
    # through DataLoader workers, the targets written through to a cache by the first (killed) run
    run_cfg = _pretrain_cfg(tmp_path / "run", loader={"workers": 1}, targets={"cache_dir": str(tmp_path / "cache")})
    cfg.write_text(yaml.safe_dump(run_cfg))
    killed = _run(["-m", "clip2scene_training.pretrain", "--config", str(cfg)], {"CLIP2SCENE_KILL_AT_STEP": "1"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "run" / "student").exists()
    resumed = _run(["-m", "clip2scene_training.pretrain", "--config", str(cfg)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 2
    ref = read_metrics(ref_out / "metrics.csv")
    got = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in got] == ["1", "2"]
    np.testing.assert_allclose([float(r["loss"]) for r in got], [float(r["loss"]) for r in ref], rtol=1e-5)
    from safetensors.torch import load_file

    a = load_file(str(ref_out / "student" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "student" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(reference, tmp_path):
    ref_out, _ = reference
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_pretrain_cfg(tmp_path / "ddp", grad_accum=1)))  # 2 ranks x 1 = global 2
    proc = _run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "clip2scene_training.pretrain",
            "--config",
            str(cfg),
        ],
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["global_batch"] == 2
    ref = [float(r["loss"]) for r in read_metrics(ref_out / "metrics.csv")]
    got = [float(r["loss"]) for r in read_metrics(tmp_path / "ddp" / "metrics.csv")]
    np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_finetune_text_init_equals_annotation_free_and_probe(reference, tmp_path):
    from clip2scene_training.evaluate import load_student
    from clip2scene_training.finetune import build_finetune_model, select_fraction
    from clip2scene_training.finetune import train as finetune

    from clip2scene_ros.models.inputs import encode_points

    assert select_fraction(250, 0.01) == [0, 100, 200]
    assert len(select_fraction(250, 0.05, "random")) == 13 and select_fraction(3, 1.0) == [0, 1, 2]
    ref_out, _ = reference
    student = load_student(ref_out / "student")
    names = student.class_names
    cfg = load_config(FinetuneConfig, {"init": str(ref_out / "student"), "classifier_init": "text", "data": DATA})
    model = build_finetune_model(cfg, len(names), names).eval()
    pts = np.random.default_rng(0).normal(0, 8, (3000, 4)).astype(np.float32)
    pts[:, 3] = np.abs(pts[:, 3]) / 10
    with torch.no_grad():
        ft = encode_points(model, [torch.from_numpy(pts)])[0]["seg"].argmax(1).numpy() + 1
    np.testing.assert_array_equal(ft, student.predict(pts))

    probe = load_config(FinetuneConfig, {
        "init": str(ref_out / "student"), "linear_probe": True, "label_fraction": 1.0, "max_steps": 2,
        "out_dir": str(tmp_path / "probe"), "num_threads": 1, "progress": False, "data": DATA,
        "loader": {"workers": 0}})  # fmt: skip
    summary = finetune(probe)
    assert summary["steps"] == 2 and summary["labelled_samples"] == 2
    from safetensors.torch import load_file

    before = load_file(str(ref_out / "student" / "model.safetensors"))
    after = load_file(str(tmp_path / "probe" / "student" / "model.safetensors"))
    body = [k for k in before if not k.startswith("heads.")]
    assert body and all(torch.equal(before[k], after[k]) for k in body)  # frozen backbone (and BN stats)
    assert after["heads.seg.weight"].shape == (len(names), before["heads.global.weight"].shape[1])


def test_evaluate_reports(reference, tmp_path, capsys):
    from clip2scene_training.evaluate import main

    ref_out, _ = reference
    cfg = {
        "checkpoint": str(ref_out / "student"),
        "out_dir": str(tmp_path / "ev"),
        "num_threads": 1,
        "progress": False,
        "teacher": TEACHER,
        "data": {**DATA, "options": {**DATA["options"], "split": "val", "key_frames_per_scene": 1}},
    }
    path = tmp_path / "ev.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["mode"] == "annotation_free" and 0 <= summary["miou"] <= 100
    assert summary["points_camera_seen"] + summary["points_camera_unseen"] == summary["points_all"]
    assert summary["points_teacher_camera_seen"] == summary["points_camera_seen"]
    for f in ("per_class_iou.md", "iou_bar.png", "confusion.png", "summary.json"):
        assert (tmp_path / "ev" / f).stat().st_size > 100
    assert "| **mIoU** |" in (tmp_path / "ev" / "per_class_iou.md").read_text()
