"""Plumbing shared by the training stages: distributed setup, seeds, precision, schedules,
safetensors checkpoints with exact resume, and metrics CSV. The loops themselves live in
``pretrain.py`` / ``finetune.py`` and read top to bottom.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "DistInfo",
    "setup_distributed",
    "cleanup_distributed",
    "seed_everything",
    "autocast",
    "learning_rate",
    "build_optimizer",
    "step_batches",
    "augment_points",
    "save_training_checkpoint",
    "load_training_checkpoint",
    "latest_checkpoint",
    "MetricsLog",
    "all_reduce_mean",
]


# --- distributed ----------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    return info


def cleanup_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- third-party code may still use the global RNG
    torch.manual_seed(seed)


# --- precision ------------------------------------------------------------------------------
def autocast(amp: str, device: str):
    """Autocast context for ``amp`` (auto: fp16 on CUDA, off on CPU where it rarely pays off)."""
    dev = "cuda" if device.startswith("cuda") else "cpu"
    if amp == "auto":
        amp = "fp16" if dev == "cuda" else "off"
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=dev, dtype=dtype)


# --- optimisation ---------------------------------------------------------------------------
def learning_rate(step: int, total: int, base: float, schedule: str, warmup: int = 0) -> float:
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant" or total <= 1:
        return base
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * base * (1.0 + math.cos(math.pi * progress))


def build_optimizer(groups: list[dict], cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


# --- data order -----------------------------------------------------------------------------
def step_batches(n: int, global_batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The global batches of one epoch: a seeded permutation cut into ``global_batch`` pieces
    (tiled when the dataset is smaller). The same on every rank, so ranks only slice it."""
    perm = np.random.default_rng([seed, epoch, 0xDA7A]).permutation(n)
    steps = max(1, n // global_batch)
    if n < global_batch:
        perm = np.resize(perm, global_batch)
    return [perm[s * global_batch : (s + 1) * global_batch] for s in range(steps)]


def augment_points(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random rotation about z and random x/y flips (pairs are indices, so they stay valid)."""
    out = points.copy()
    a = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(a), np.sin(a)
    x, y = out[:, 0].copy(), out[:, 1].copy()
    out[:, 0], out[:, 1] = c * x - s * y, s * x + c * y
    if rng.random() < 0.5:
        out[:, 0] = -out[:, 0]
    if rng.random() < 0.5:
        out[:, 1] = -out[:, 1]
    return out


# --- checkpoints ----------------------------------------------------------------------------
def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_checkpoint(
    out_dir: Path, step: int, model, optimizer, state: dict, keep: int = 2, extra: dict | None = None
) -> Path:
    """Write ``checkpoints/step_XXXXXXX`` atomically (tmp dir + rename), then point ``latest`` at it.
    A kill at any moment leaves the previous checkpoint intact."""
    from clip2scene_ros.models import save_checkpoint

    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, model, extra)
    tensors, meta = _flatten_optimizer(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step, "optimizer": meta}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / ".latest.tmp"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, root / "latest")
    old = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in old[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    pointer = Path(out_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_training_checkpoint(path: Path, model, optimizer) -> dict:
    """Restore weights, optimizer and torch RNG in place; returns the trainer state (step, epoch...)."""
    state = load_file(str(Path(path) / "model.safetensors"))
    model.load_state_dict(state, strict=True)
    tensors = load_file(str(Path(path) / "optimizer.safetensors"))
    rng = tensors.pop("rng.torch")
    meta = json.loads((Path(path) / "trainer_state.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(rng)
    return meta


# --- metrics --------------------------------------------------------------------------------
class MetricsLog:
    """Append rows to ``metrics.csv`` (and TensorBoard when installed). On resume, rows after the
    checkpoint's step are dropped, so the file never holds a step twice."""

    def __init__(self, path: Path, fields: list[str], resume_step: int | None = None, enabled: bool = True):
        self.path = Path(path)
        self.fields = fields
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step is not None and self.path.is_file():
            with open(self.path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.path.parent / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: row.get(k, "") for k in self.fields})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))
