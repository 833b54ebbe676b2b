"""SPVCNN in the engine: ONNX export with the TensorRT operator set (ONNX Runtime = eager),
checkpoints with BatchNorm folding, per-point encode_points with gradients, and the same
pre-training and fine-tuning code as MinkUNet (built through the model registry)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2scene_ros.cli.main import main
from clip2scene_ros.inference.backends import create_backend
from clip2scene_ros.inference.export import TENSORRT_OPS, example_points, graph_ops, read_sidecar
from clip2scene_ros.inference.tensorrt import TensorRTOptions, profile_shapes
from clip2scene_ros.models import SPVCNN, create_model, encode_points, list_models, load_checkpoint, save_checkpoint

SMALL = dict(width=0.125, layers=[1, 1, 1, 1, 1, 1, 1, 1], embed_dim=16, voxel_size=0.2)


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_spvcnn_is_a_registry_model_beside_minkunet():
    assert {"spvcnn", "spvcnn_tiny", "minkunet18"} <= set(list_models())
    m = create_model("spvcnn_tiny")
    assert isinstance(m, SPVCNN) and m.config.arch == "spvcnn"
    full = sum(p.numel() for p in create_model("spvcnn").parameters())
    mink = sum(p.numel() for p in create_model("minkunet18").parameters())
    assert 0 < full - mink < 0.2e6  # the point branch: three Linear + BN layers
    with pytest.raises(ValueError, match="unknown arch"):
        create_model("spvcnn", arch="pointnet")


def test_spvcnn_exports_to_tensorrt_operators_and_onnxruntime_equals_eager(tmp_path):
    torch.manual_seed(0)
    model = _randomise_bn(create_model("spvcnn", **SMALL))
    save_checkpoint(tmp_path, model)
    assert main(["export", str(tmp_path)]) == 0
    onnx_path = tmp_path / "model.onnx"
    ops = graph_ops(onnx_path)
    assert ops <= TENSORRT_OPS, f"operators TensorRT does not import: {ops - TENSORRT_OPS}"
    assert not {"ScatterElements", "ScatterND", "Unique", "NonZero", "TopK", "Loop"} & ops
    inputs = read_sidecar(onnx_path)["inputs"]
    opts = TensorRTOptions(min_voxels=100, opt_voxels=2000, max_voxels=40000)
    assert set(profile_shapes(model.config, opts)["dims"]) == set(inputs)
    ort, eager = create_backend("onnxruntime", tmp_path, threads=1), create_backend("torch", tmp_path)
    for n in (None, 2500):
        pts = example_points(n, seed=3)
        pts[:4, 1] = np.nan  # dropped points: zeros on every path
        a, b = ort(pts), eager(pts)
        assert a["global"].shape == (len(pts), 16) and not a["global"][:4].any()
        assert max(float(np.abs(a[h] - b[h]).max()) for h in a) < 1e-4
        assert float(np.abs(b["global"]).mean()) > 1e-3
        # per point, not per voxel: two points of one voxel generally differ
        _, rows = eager.voxel_outputs(pts)
        assert rows.max() + 1 == len(pts) - 4


def test_spvcnn_checkpoint_folding_and_batched_encode_points(tmp_path):
    torch.manual_seed(1)
    model = _randomise_bn(create_model("spvcnn_tiny", embed_dim=8), seed=1)
    clouds = [torch.from_numpy(example_points(1500, seed=s)) for s in (1, 2)]
    clouds[1][:3, 0] = float("inf")
    with torch.no_grad():
        ref = encode_points(model, clouds)
        alone = encode_points(model, [clouds[0]])[0]
    assert [r["global"].shape[0] for r in ref] == [1500, 1500]
    assert (ref[0]["global"] - alone["global"]).abs().max() < 1e-5  # clouds of a batch do not mix
    assert not ref[1]["local"][:3].any() and ref[1]["local"][3:].abs().sum(1).min() > 0
    save_checkpoint(tmp_path / "a", model)
    folded = create_model(model.config)
    folded.load_state_dict(model.state_dict())
    save_checkpoint(tmp_path / "b", folded.fold_bn())
    for d in ("a", "b"):
        loaded, cfg, _ = load_checkpoint(tmp_path / d)
        assert isinstance(loaded, SPVCNN) and loaded.bn_folded == (d == "b")
        with torch.no_grad():
            out = encode_points(loaded.eval(), clouds)
        assert max((o["global"] - r["global"]).abs().max() for o, r in zip(out, ref)) < 1e-4

    model.train()
    out = encode_points(model, clouds)
    (out[0]["global"].square().mean() + out[1]["local"].mean()).backward()
    for name in ("point_transforms.2.linear.weight", "stem.0.conv.weight", "enc_blocks.3.0.conv1.conv.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_spvcnn_pretrains_and_finetunes_with_the_shared_training_code(tmp_path):
    pytest.importorskip("clip2scene_training")
    from clip2scene_training.config import FinetuneConfig, PretrainConfig, load_config
    from clip2scene_training.finetune import train as finetune
    from clip2scene_training.pretrain import train as pretrain

    data = {
        "kind": "synthetic",
        "options": {
            "split": "train", "num_scenes": 1, "key_frames_per_scene": 2, "num_sweeps": 1,
            "sim_config": {"lidar.points_per_ring": 100, "cameras.width": 160, "cameras.height": 96,
                           "cameras.names": ["cam_front"]},
        },
    }  # fmt: skip
    pre = pretrain(load_config(PretrainConfig, {
        "out_dir": str(tmp_path / "pre"), "model": "spvcnn_tiny", "batch_size": 1, "max_steps": 2,
        "num_threads": 1, "progress": False, "data": data, "targets": {"cache_dir": str(tmp_path / "targets")},
        "teacher": {"model": "c2s-tiny-vit-p16", "random_init": True, "vocabulary": "synthetic"},
    }))  # fmt: skip
    student, cfg, _ = load_checkpoint(tmp_path / "pre" / "student")
    assert pre["steps"] == 2 and isinstance(student, SPVCNN) and cfg.arch == "spvcnn"
    summary = finetune(load_config(FinetuneConfig, {
        "init": str(tmp_path / "pre" / "student"), "label_fraction": 0.5, "max_steps": 2,
        "out_dir": str(tmp_path / "ft"), "num_threads": 1, "progress": False, "data": data,
    }))  # fmt: skip
    tuned, tuned_cfg, _ = load_checkpoint(tmp_path / "ft" / "student")
    assert summary["steps"] == 2 and isinstance(tuned, SPVCNN) and tuned_cfg.heads == ["seg"]
    key = "point_transforms.0.linear.weight"
    assert (tuned.state_dict()[key] - student.state_dict()[key]).abs().max() > 0  # the point branch trains too
