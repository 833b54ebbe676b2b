"""Precision choice from the CPU's capabilities (flags injected), and bf16 label agreement on real scans."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from clip2scene_ros.inference.backends import (
    BF16_AGREEMENT_KEY,
    BF16_MIN_AGREEMENT,
    TorchBackend,
    choose_precision,
    create_backend,
)
from clip2scene_ros.inference.cpu import CpuInfo, cpu_info, resolve_precision
from clip2scene_ros.models import create_model, load_checkpoint, save_checkpoint

AMD_AVX2 = CpuInfo("AMD EPYC 7B13", frozenset({"avx2", "fma", "sse4_2"}), 2, "AVX2", flags_injected=True)
INTEL_AMX = CpuInfo("Intel(R) Xeon(R)", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}), 2, "AVX512")
SAFE = {BF16_AGREEMENT_KEY: 0.999}


def test_cpu_flags_are_read_and_can_be_injected(monkeypatch):
    info = cpu_info()
    assert info.model and info.cores >= 1 and info.flags
    assert info.describe().startswith(f"CPU: {info.model}")
    monkeypatch.setenv("CLIP2SCENE_CPU_FLAGS", "avx2 fma")
    amd = cpu_info()
    assert amd.flags == {"avx2", "fma"} and amd.flags_injected and not amd.bf16_native
    assert "emulated" in amd.describe() and "injected" in amd.describe()
    assert cpu_info(flags="avx512f avx512_bf16").bf16_native
    assert cpu_info(flags="amx_tile amx_bf16").amx


def test_auto_never_picks_bf16_without_native_bf16(caplog):
    assert choose_precision("auto", "torch", "cpu", SAFE, AMD_AVX2) == "fp32"
    assert choose_precision("auto", "torch", "cpu", SAFE, INTEL_AMX) == "bf16"
    # no recorded agreement (or too low): fp32 even where bf16 is native
    assert choose_precision("auto", "torch", "cpu", {}, INTEL_AMX) == "fp32"
    assert choose_precision("auto", "torch", "cpu", {BF16_AGREEMENT_KEY: 0.99}, INTEL_AMX) == "fp32"
    assert choose_precision("auto", "onnxruntime", "cpu", SAFE, INTEL_AMX) == "fp32"
    assert choose_precision("auto", "tensorrt", "cuda", SAFE, AMD_AVX2) == "fp16"
    assert choose_precision("fp32", "torch", "cpu", SAFE, INTEL_AMX) == "fp32"
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("bf16", "torch", "cpu", AMD_AVX2) == "fp32"
    assert "emulated" in caplog.text
    assert resolve_precision("bf16", "torch", "cpu", INTEL_AMX) == "bf16"


def test_backend_auto_follows_checkpoint_and_cpu(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = create_model("minkunet18", width=0.125, layers=[1] * 8, embed_dim=16, voxel_size=0.2)
    save_checkpoint(tmp_path, model, extra=SAFE)
    assert create_backend("torch", tmp_path, precision="auto", cpu=INTEL_AMX).precision == "bf16"
    assert create_backend("torch", tmp_path, precision="auto", cpu=AMD_AVX2).precision == "fp32"
    monkeypatch.setenv("CLIP2SCENE_CPU_FLAGS", "avx2 fma")
    assert create_backend("torch", tmp_path, precision="auto").precision == "fp32"
    assert create_backend("torch", tmp_path, precision="bf16").dtype == torch.float32
    assert TorchBackend(load_checkpoint(tmp_path)[0], precision="auto").precision == "fp32"


def _labels(model, prep, text: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    with torch.no_grad():
        feats = model(prep.feats.to(dtype), prep.maps)["global"].float()
    return (feats @ text.T).argmax(1)[torch.from_numpy(prep.point_rows)].numpy()


def test_default_student_bf16_agreement_decides_auto(real_data):
    """``auto`` may pick bf16 for the shipped student only if its recorded agreement says its labels stay
    >= 99.5 % equal to fp32 (and that figure is what the weights give)."""
    from safetensors.torch import load_file

    from clip2scene_ros.models.inputs import prepare_inputs
    from clip2scene_ros.nodes.parameters import default_checkpoint
    from clip2scene_ros.sparse.samples import load_real_frame

    ckpt = default_checkpoint()
    if not (ckpt / "text_embeddings.safetensors").is_file():
        pytest.skip("no shipped default student")
    if not cpu_info().bf16_native:
        pytest.skip("this CPU has no native bf16; auto is fp32 regardless (checked above)")
    text = next(iter(load_file(str(ckpt / "text_embeddings.safetensors")).values())).float()
    fp32, _, extra = load_checkpoint(ckpt)
    fp32.fold_bn()
    bf16 = load_checkpoint(ckpt)[0].fold_bn().to(torch.bfloat16)
    agreement = {}
    for name in ("nuscenes", "kitti"):
        pts = load_real_frame(real_data, name)
        if name == "nuscenes":
            pts[:, 3] /= 255.0  # the student reads intensity in 0..1
        prep = prepare_inputs(fp32.config, pts)
        ref = _labels(fp32, prep, text, torch.float32)
        agreement[name] = float((_labels(bf16, prep, text, torch.bfloat16) == ref).mean())
    print(f"bf16 labels equal to fp32 on real scans: {agreement}")
    assert min(agreement.values()) > 0.98, agreement  # bf16 works; only the threshold is in question
    auto = choose_precision("auto", "torch", "cpu", extra, INTEL_AMX)
    if BF16_AGREEMENT_KEY in extra:  # a recorded figure must be what the weights give, and decides
        assert abs(float(extra[BF16_AGREEMENT_KEY]) - min(agreement.values())) < 0.002
        assert auto == ("bf16" if min(agreement.values()) >= BF16_MIN_AGREEMENT else "fp32"), (auto, agreement)
    else:  # without a recorded figure (e.g. the fused fp32 path is the faster one) auto stays fp32
        assert auto == "fp32", (auto, agreement)


def test_core_budget_uses_only_the_cores_other_processes_leave_idle(monkeypatch):
    from clip2scene_ros.inference import cpu

    budget = cpu.CoreBudget(cores=2, refresh_s=3600.0)  # own share stays 0 within the test
    for load, want in ((0.1, 2), (0.4, 2), (0.6, 1), (1.0, 1), (5.0, 1)):
        monkeypatch.setattr(cpu.os, "getloadavg", lambda load=load: (load, load, load))
        assert budget.threads(2) == want, load
        assert budget.threads(1) == 1 and budget.threads(0) == 1
    budget._own = 0.9  # this process's own demand is not someone else's
    monkeypatch.setattr(cpu.os, "getloadavg", lambda: (1.2, 1.2, 1.2))
    assert budget.threads(2) == 2 and budget.threads(4) == 2
