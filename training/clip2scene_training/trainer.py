"""The training loop every stage shares (pre-training, fine-tuning, the 2D teacher) and its
plumbing: distributed setup, seeds, precision, schedules, safetensors checkpoints with exact
resume, metrics CSV + TensorBoard. A stage supplies its model, optimizer, data and loss as a
:class:`Stage`; :func:`run_loop` does the rest.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    "StepBatchSampler",
    "save_training_checkpoint",
    "load_training_checkpoint",
    "latest_checkpoint",
    "MetricsLog",
    "all_reduce_mean",
    "resolve_amp",
    "cpu_has_native_bf16",
    "Stage",
    "LoopResult",
    "run_loop",
    "KILL_ENV",
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
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively; elsewhere bf16 is emulated and slower than fp32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(amp: str, device: str) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler). ``auto``: fp16 with a GradScaler on CUDA; on CPU
    bf16 where the CPU computes it natively, else fp32. fp16 always gets a GradScaler (its small
    gradients underflow without one); bf16 has fp32's exponent range and needs none."""
    cuda = device.startswith("cuda")
    if amp == "auto":
        amp = "fp16" if cuda else ("bf16" if cpu_has_native_bf16() else "off")
    if amp == "off":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    return torch.float16, True


def autocast(amp: str, device: str):
    """Autocast context for ``amp`` as resolved by :func:`resolve_amp`."""
    dtype, _ = resolve_amp(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


# --- optimisation ---------------------------------------------------------------------------
def learning_rate(
    step: int, total: int, base: float, schedule: str, warmup: int = 0, min_ratio: float = 0.0
) -> float:
    """Linear warm-up over ``warmup`` steps, then constant or cosine down to ``min_ratio * base``."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant" or total <= 1:
        return base
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_optimizer(groups: list[dict], cfg) -> torch.optim.Optimizer:
    """SGD or AdamW over ``groups``; a group's own ``weight_decay`` wins over the config's."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))


# --- data order -----------------------------------------------------------------------------
def step_batches(n: int, global_batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The global batches of one epoch: a seeded permutation cut into ``global_batch`` pieces
    (tiled when the dataset is smaller). The same on every rank, so ranks only slice it."""
    perm = np.random.default_rng([seed, epoch, 0xDA7A]).permutation(n)
    steps = max(1, n // global_batch)
    if n < global_batch:
        perm = np.resize(perm, global_batch)
    return [perm[s * global_batch : (s + 1) * global_batch] for s in range(steps)]


class StepBatchSampler:
    """This rank's micro-batches from ``start_step`` on: lists of ``(sample index, epoch)``.

    Step ``s`` uses global batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``; its
    ``grad_accum`` micro-batches are cut so that rank r's micro m holds slice (m * world + r), i.e.
    2 ranks x 1 micro-batch see the same samples as 1 rank x 2 accumulated micro-batches. Usable as a
    DataLoader ``batch_sampler``."""

    def __init__(self, n: int, batch_size: int, grad_accum: int, dist_info: DistInfo, seed: int, start_step: int,
                 total_steps: int):  # fmt: skip
        self.n, self.batch_size, self.grad_accum = n, batch_size, grad_accum
        self.world, self.rank, self.seed = dist_info.world, dist_info.rank, seed
        self.global_batch = batch_size * grad_accum * dist_info.world
        self.steps_per_epoch = len(step_batches(n, self.global_batch, seed, 0))
        self.start_step, self.total_steps = start_step, total_steps

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.grad_accum

    def __iter__(self):
        epoch, batches = -1, []
        for step in range(self.start_step, self.total_steps):
            if self.epoch_of(step) != epoch:
                epoch = self.epoch_of(step)
                batches = step_batches(self.n, self.global_batch, self.seed, epoch)
            batch = batches[step % self.steps_per_epoch]
            for micro in range(self.grad_accum):
                start = (micro * self.world + self.rank) * self.batch_size
                yield [(int(i), epoch) for i in batch[start : start + self.batch_size]]


def augment_points(points: np.ndarray, rng: np.random.Generator, cfg=None) -> np.ndarray:
    """``augment.augment``: by default a random rotation about z and random x/y flips (pairs are
    indices, so they stay valid); ``cfg`` an ``augment.AugmentConfig`` for the full set."""
    from clip2scene_training.augment import augment

    return augment(points, rng, cfg)


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


def save_state_dict(directory: Path, model: torch.nn.Module, extra: dict | None = None) -> None:
    """Checkpoint writer for models without a ``clip2scene_ros.models`` config (the 2D teacher)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(Path(directory) / "model.safetensors"))


def save_training_checkpoint(
    out_dir: Path,
    step: int,
    model,
    optimizer,
    state: dict,
    keep: int = 2,
    extra: dict | None = None,
    save_model: Callable[[Path, torch.nn.Module, dict | None], Any] | None = None,
) -> Path:
    """Write ``checkpoints/step_XXXXXXX`` atomically (tmp dir + rename), then point ``latest`` at it.
    A kill at any moment leaves the previous checkpoint intact."""
    if save_model is None:
        from clip2scene_ros.models import save_checkpoint as save_model

    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(tmp, model, extra)
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
    """Append rows to ``metrics.csv`` and the same scalars to TensorBoard event files in
    ``tensorboard/`` beside it. On resume, CSV rows after the checkpoint's step are dropped, so the
    file never holds a step twice (TensorBoard shows the latest event file's values)."""

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
        from clip2scene_training.tbevents import EventWriter

        self.tb = EventWriter(self.path.parent / "tensorboard")

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: row.get(k, "") for k in self.fields})
        if self.tb is not None:
            scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
            self.tb.add_scalars(scalars, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --- the loop shared by every stage ---------------------------------------------------------
KILL_ENV = "CLIP2SCENE_KILL_AT_STEP"  # tests: SIGKILL the process right after that optimizer step


def rss_mb() -> float:
    """Peak resident set size of this process (MB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def _no_epochs(step: int) -> int:
    return 0


@dataclass
class Stage:
    """What a training stage hands to :func:`run_loop`: its model, optimizer, data and loss.

    ``batches(start_step)`` yields this rank's micro-batches in order from ``start_step``
    (``grad_accum`` of them per optimizer step), so a resumed run reads the data where the
    checkpoint left it. ``forward(batch, step)`` runs the network (inside autocast);
    ``loss(outputs, batch, step)`` runs outside it, in fp32, and returns the micro-batch's mean loss
    and the figures to log. Parts named in ``counters`` are summed over the
    micro-batches and ranks' means reported; other parts are averaged.
    """

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], Iterable[Any]]
    forward: Callable[[Any, int], Any]
    loss: Callable[[Any, Any, int], tuple[torch.Tensor, dict[str, float]]]
    lr_factor: Callable[[int, int], float]  # (step, total steps) -> multiplier of each group's base_lr
    fields: tuple[str, ...] = ()
    counters: tuple[str, ...] = ()
    net: torch.nn.Module | None = None  # the DistributedDataParallel wrapper, when distributed
    epoch_of: Callable[[int], int] = field(default=_no_epochs)
    samples_per_step: int = 0  # global batch, for the throughput column
    after_step: Callable[[int], None] | None = None
    save_model: Callable[[Path, torch.nn.Module, dict | None], Any] | None = None
    grad_params: list[torch.nn.Parameter] | None = None  # clipped parameters (default: all)
    train_mode: bool = True  # False: eval mode throughout (frozen BatchNorm statistics)


@dataclass
class LoopResult:
    step: int
    start_step: int
    total_steps: int
    last: dict[str, float]
    seconds: float
    resumed_from: str | None


def resolve_resume(out_dir: Path, resume: str) -> Path | None:
    if resume == "auto":
        return latest_checkpoint(out_dir)
    if resume == "never":
        return None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a training checkpoint (no trainer_state.json)")
    return path


def run_loop(
    stage: Stage,
    cfg,
    total_steps: int,
    dist_info: DistInfo,
    out_dir: Path,
    resume: str = "auto",
    grad_clip: float | None = None,
    time_budget_s: float | None = None,
    budget_from_step: int = 0,
) -> LoopResult:
    """Schedule, accumulation, autocast + GradScaler, clipping, checkpoints with exact resume, CSV +
    TensorBoard + progress bar. ``cfg`` is a :class:`~clip2scene_training.config.LoopConfig`.

    With ``time_budget_s`` the schedule is fitted to the budget once 10 steps after
    ``budget_from_step`` are timed; the fitted length is checkpointed so a resumed run keeps it."""
    out_dir = Path(out_dir)
    amp_dtype, use_scaler = resolve_amp(cfg.amp, cfg.device)
    scaler = torch.amp.GradScaler("cuda" if cfg.device.startswith("cuda") else "cpu", enabled=use_scaler)
    for g in stage.optimizer.param_groups:
        g.setdefault("base_lr", g["lr"])
    step, fitted = 0, False
    ckpt = resolve_resume(out_dir, resume)
    if ckpt is not None:
        state = load_training_checkpoint(ckpt, stage.model, stage.optimizer)
        step = int(state["step"])
        if state.get("scaler") and use_scaler:
            scaler.load_state_dict(state["scaler"])
        if time_budget_s and state.get("fitted_total"):
            total_steps, fitted = int(state["fitted_total"]), True
    cuda = cfg.device.startswith("cuda")
    fields = ["step", "epoch", "lr", "loss", *stage.fields, *stage.counters, "samples_per_s", "rss_mb"]
    fields += ["gpu_mem_mb", "seconds"] if cuda else ["seconds"]
    log = MetricsLog(out_dir / "metrics.csv", fields, resume_step=step if ckpt else None, enabled=dist_info.is_main)
    progress = None
    if cfg.progress and dist_info.is_main:
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=step, desc=stage.name, unit="step", dynamic_ncols=True)
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    clip_params = stage.grad_params if stage.grad_params is not None else list(stage.model.parameters())
    autocast_ctx = (
        (lambda: torch.autocast("cuda" if cfg.device.startswith("cuda") else "cpu", dtype=amp_dtype))
        if amp_dtype is not None
        else contextlib.nullcontext
    )
    start_step = step
    micro_batches = iter(stage.batches(step))
    stage.model.train(stage.train_mode)
    t_start, budget_t0, last = time.time(), None, {}
    while step < total_steps:
        t0 = time.time()
        if time_budget_s and not fitted:
            if step == budget_from_step:
                budget_t0 = t0
            elif budget_t0 is not None and step == budget_from_step + 10:
                per_step = (t0 - budget_t0) / 10
                remaining = time_budget_s - (t0 - t_start)
                total_steps = max(step + 1, min(total_steps, step + int(remaining / per_step)))
                fitted = True
                if progress is not None:
                    progress.total = total_steps
        factor = stage.lr_factor(step, total_steps)
        for g in stage.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            try:
                batch = next(micro_batches)
            except StopIteration:
                raise RuntimeError(f"{stage.name}: the data ran out at step {step} of {total_steps}") from None
            sync = micro == cfg.grad_accum - 1 or stage.net is None or not dist_info.enabled
            with contextlib.nullcontext() if sync else stage.net.no_sync():
                with autocast_ctx():
                    outputs = stage.forward(batch, step)
                loss, parts = stage.loss(outputs, batch, step)
                scaler.scale(loss / cfg.grad_accum).backward()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + (v if k in stage.counters else v / cfg.grad_accum)
        if grad_clip:
            scaler.unscale_(stage.optimizer)
            torch.nn.utils.clip_grad_norm_(clip_params, grad_clip)
        scaler.step(stage.optimizer)
        scaler.update()
        stage.optimizer.zero_grad(set_to_none=True)
        step += 1
        if stage.after_step is not None:
            stage.after_step(step)
        # logged figures are averaged over ranks (the gradients were averaged by DDP)
        last = {k: all_reduce_mean(float(v), dist_info) for k, v in sums.items()}
        seconds = time.time() - t0
        epoch = stage.epoch_of(step - 1)
        if step % cfg.log_every == 0 or step == total_steps:
            log.log(
                {
                    "step": step,
                    "epoch": epoch,
                    "lr": stage.optimizer.param_groups[-1]["lr"],
                    "samples_per_s": round(stage.samples_per_step / seconds, 3) if seconds > 0 else "",
                    "rss_mb": round(rss_mb(), 1),
                    **({"gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if cuda else {}),
                    "seconds": round(seconds, 3),
                    **{k: round(v, 6) for k, v in last.items()},
                }
            )
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{stage.optimizer.param_groups[-1]['lr']:.3g}")
        if (step % cfg.checkpoint_every == 0 or step == total_steps) and dist_info.is_main:
            state = {"epoch": epoch, "scaler": scaler.state_dict() if use_scaler else None}
            if fitted:
                state["fitted_total"] = total_steps
            save_training_checkpoint(
                out_dir, step, stage.model, stage.optimizer, state, cfg.keep_checkpoints, save_model=stage.save_model
            )
        if kill_at and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    if progress is not None:
        progress.close()
    log.close()
    return LoopResult(step, start_step, total_steps, last, time.time() - t_start, str(ckpt) if ckpt else None)
