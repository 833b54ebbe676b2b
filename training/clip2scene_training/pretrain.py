"""``clip2scene train pretrain``: CLIP2Scene annotation-free pre-training of the 3D student.

Reads top to bottom: config -> devices and seeds -> data and teacher -> model and optimizer ->
data order and loss (Eq. 1 + Eq. 2-4) handed to the shared loop (``trainer.run_loop``: schedule,
accumulation, precision, checkpoints, resume, logging) -> final student checkpoint + a JSON
summary as the last output line.

Multi-process: ``torchrun --nproc_per_node N -m clip2scene_training.pretrain --config X``
(gloo on CPU, nccl on GPUs); the global batch is batch_size x grad_accum x world size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clip2scene_training.config import PretrainConfig, config_to_dict, load_config
from clip2scene_training.losses import semantic_loss, spatial_temporal_loss
from clip2scene_training.streaming import PretrainItems, SkipLog, make_loader, to_device
from clip2scene_training.target_cache import TargetCache, cache_key
from clip2scene_training.targets import SampleTargets
from clip2scene_training.trainer import (
    Stage,
    StepBatchSampler,
    build_optimizer,
    cleanup_distributed,
    learning_rate,
    rss_mb,
    run_loop,
    seed_everything,
    setup_distributed,
)

HELP = "CLIP2Scene pre-training from a frozen CLIP teacher (no 3D labels): Eq. 1 + Eq. 2-4"


class StudentForward(torch.nn.Module):
    """Wraps :func:`clip2scene_ros.models.inputs.encode_points` as ``forward`` so DistributedDataParallel
    sees the call."""

    def __init__(self, model: torch.nn.Module, voxel_size: float):
        super().__init__()
        self.model = model
        self.voxel_size = voxel_size

    def forward(self, clouds: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        from clip2scene_ros.models.inputs import encode_points

        return encode_points(self.model, clouds, self.voxel_size)


def build_teacher(spec, device: str):
    from clip2scene_ros.teacher import create_teacher, load_vocabulary

    teacher = create_teacher(spec.model, spec.weights, device=device, random_init=spec.random_init, **spec.options)
    vocab = load_vocabulary(spec.vocabulary, details=spec.details) if spec.details else load_vocabulary(spec.vocabulary)
    text = teacher.encode_vocabulary(vocab).float().cpu()
    return teacher, vocab, text


def sample_loss(
    outs: list[dict[str, torch.Tensor]], tg: SampleTargets, text: torch.Tensor, cfg, self_train: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one sample; ``outs`` holds the student's per-point heads for each of its sweeps."""
    lc = cfg.loss
    glob = torch.cat([o["global"][t.point_index] for o, t in zip(outs, tg.sweeps, strict=True)])
    loc = torch.cat([o["local"][t.point_index] for o, t in zip(outs, tg.sweeps, strict=True)])
    pix = torch.cat([t.pixel_feats for t in tg.sweeps]).float()
    pseudo = torch.cat([t.pseudo for t in tg.sweeps])
    if self_train:  # S3T: the student's own text-space argmax replaces the teacher's pixel class
        pseudo = (F.normalize(glob.detach().float(), dim=-1) @ text.T).argmax(1)
    n_key = len(tg.sweeps[0].point_index)
    sem_rows = slice(None) if lc.semantic_on_sweeps else slice(0, n_key)
    l_sem = semantic_loss(lc.semantic, glob[sem_rows], text, pseudo[sem_rows], lc.tau, lc.denominator, lc.reduction)
    l_st = spatial_temporal_loss(lc.spatial_temporal, loc, pix, text, pseudo, tg.groups, lc.lam, lc.detach_center)
    loss = lc.semantic_weight * l_sem + lc.spatial_temporal_weight * l_st
    return loss, {"loss_semantic": float(l_sem.detach()), "loss_spatial_temporal": float(l_st.detach())}


def open_target_cache(cfg: PretrainConfig, teacher, text: torch.Tensor) -> TargetCache | None:
    """The cache holding this teacher's targets for this dataset and pairing (None: no cache)."""
    if not cfg.targets.cache_dir:
        return None
    from clip2scene_ros.teacher.feature_cache import teacher_fingerprint

    dataset_desc = {"kind": cfg.data.kind, "options": cfg.data.options}
    key, manifest = cache_key(teacher_fingerprint(teacher), text, cfg.data.pairing, dataset_desc)
    return TargetCache(cfg.targets.cache_dir, key, manifest)


def lr_schedule(optim) -> Callable[[int, int], float]:
    """The config's schedule as a multiplier of each parameter group's base lr."""
    return lambda step, total: learning_rate(
        step, total, 1.0, optim.schedule, optim.warmup_steps, optim.min_lr_ratio
    )


def train(cfg: PretrainConfig, resume: str = "auto") -> dict:
    # -- devices, seeds ------------------------------------------------------------------------
    dist_info = setup_distributed(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)  # same on every rank: identical init (DDP also broadcasts) and teacher
    out_dir = Path(cfg.out_dir)
    device = cfg.device

    # -- data and teacher ----------------------------------------------------------------------
    from clip2scene_ros.datasets import create_dataset
    from clip2scene_ros.models import create_model, save_checkpoint

    teacher, vocab, text = build_teacher(cfg.teacher, device)
    cache = open_target_cache(cfg, teacher, text)
    complete = cache.complete_count() if cache is not None else None
    # A complete cache holds everything training reads: the raw dataset (whose index tables grow
    # with its size, in every worker) is not opened at all.
    dataset = None if complete else create_dataset(cfg.data.kind, cfg.data.pairing, **cfg.data.options)
    num_samples = complete or len(dataset)
    if cache is not None:
        cache.set_count(num_samples)
        if dist_info.is_main:
            done = complete or cache.done(num_samples)
            print(f"target cache {cache.dir}: {done}/{num_samples} samples ready", file=sys.stderr)
    # Each item is read from the cache (or computed by the teacher in the worker), augmented and
    # dropped after its step: nothing grows with the dataset.
    worker_teacher = teacher
    if device.startswith("cuda") and not complete:
        worker_teacher = build_teacher(cfg.teacher, "cpu")[0]  # CUDA does not survive fork into workers
    from clip2scene_training.augment import AugmentConfig

    items = PretrainItems(
        dataset, cache, worker_teacher, text, cfg.loss.grid_size, cfg.loss.max_per_grid, cfg.seed, cfg.augment,
        cfg.targets.write_through, AugmentConfig.from_dict(cfg.augmentation), num_samples,
    )  # fmt: skip

    # -- model and optimizer -------------------------------------------------------------------
    overrides = {"embed_dim": teacher.embed_dim, **cfg.model_overrides}
    model = create_model(cfg.model, **overrides).to(device)
    if overrides["embed_dim"] != teacher.embed_dim:
        raise ValueError(f"model embed_dim {overrides['embed_dim']} != teacher embed_dim {teacher.embed_dim}")
    for head in ("global", "local"):
        if head not in model.config.heads:
            raise ValueError(
                f"the student needs heads 'global' and 'local' (separate heads per loss); "
                f"{cfg.model} has {model.config.heads}"
            )
    if cfg.init:  # a new schedule from earlier weights (resume continues a run instead)
        from clip2scene_ros.models import load_checkpoint

        try:
            model.load_state_dict(load_checkpoint(cfg.init)[0].state_dict())
        except RuntimeError as e:  # missing, unexpected or differently shaped weights
            raise ValueError(f"init {cfg.init}: not this architecture ({str(e).splitlines()[-1].strip()})") from None
    voxel_size = cfg.voxel_size or model.config.voxel_size
    net = StudentForward(model, voxel_size)
    if dist_info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=False)
    optimizer = build_optimizer([{"params": model.parameters()}], cfg.optim)

    # -- data order, loss ----------------------------------------------------------------------
    sampler = StepBatchSampler(num_samples, cfg.batch_size, cfg.grad_accum, dist_info, cfg.seed, 0, 0)
    total_steps = cfg.max_steps or cfg.epochs * sampler.steps_per_epoch
    text_dev = text.to(device)

    skips = SkipLog()

    def batches(start_step: int):
        sampler.start_step, sampler.total_steps = start_step, total_steps
        for batch in make_loader(items, sampler, cfg.loader, device):
            skips.add(batch["skipped"])
            yield to_device(batch, device)

    def loss_fn(outs, batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        clouds, samples = batch["clouds"], batch["samples"]
        epoch = sampler.epoch_of(step)
        st_rng = np.random.default_rng([cfg.seed, step, 0x5E1F])  # same draw on every rank
        self_train = bool(
            cfg.loss.self_training
            and epoch >= cfg.loss.self_training_start_epoch
            and st_rng.random() < cfg.loss.self_training_prob
        )
        losses, parts, cursor = [], {"loss_semantic": 0.0, "loss_spatial_temporal": 0.0}, 0
        for n, tg in samples:
            loss_i, p = sample_loss(outs[cursor : cursor + n], tg, text_dev, cfg, self_train)
            cursor += n
            losses.append(loss_i)
            for k, v in p.items():
                parts[k] += v / len(samples)
        parts["self_training"] = float(self_train)
        parts["points"] = float(sum(len(c) for c in clouds))
        parts["pairs"] = float(sum(len(t.point_index) for _, tg in samples for t in tg.sweeps))
        return torch.stack(losses).mean(), parts

    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=1))
    stage = Stage(
        name="pretrain",
        model=model,
        optimizer=optimizer,
        batches=batches,
        forward=lambda batch, step: net(batch["clouds"]),
        loss=loss_fn,
        lr_factor=lr_schedule(cfg.optim),
        fields=("loss_semantic", "loss_spatial_temporal", "self_training"),
        counters=("points", "pairs"),
        net=net if dist_info.enabled else None,
        epoch_of=sampler.epoch_of,
        samples_per_step=sampler.global_batch,
        save_model=lambda d, m, extra: save_checkpoint(d, m, {**(extra or {}), **input_frame(cfg)}),
    )
    result = run_loop(stage, cfg, total_steps, dist_info, out_dir, resume, cfg.optim.grad_clip)

    # -- final student ---------------------------------------------------------------------------
    summary = {
        "stage": "pretrain",
        "steps": result.step,
        "final_loss": result.last.get("loss"),
        "world_size": dist_info.world,
        "global_batch": sampler.global_batch,
        "samples": num_samples,
        "seconds": round(result.seconds, 2),
        "samples_per_s": round((result.step - result.start_step) * sampler.global_batch / max(result.seconds, 1e-9), 3),
        "peak_rss_mb": round(rss_mb(), 1),
        "skipped_samples": skips.summary(),
        "target_cache": str(cache.dir) if cache is not None else None,
        "student": str(out_dir / "student"),
    }
    if skips.reasons and dist_info.is_main:
        print(f"{len(skips.reasons)} unreadable samples skipped: {skips.summary()['samples']}", file=sys.stderr)
    if dist_info.is_main:
        save_student(out_dir / "student", model, text, vocab, cfg, text_space=teacher.model_id)
    cleanup_distributed()
    return summary


def input_frame(cfg) -> dict:
    """``extra`` entry naming the frame the student reads clouds in, which the node and evaluation
    convert to (none: the simulator's LIDAR_TOP)."""
    if cfg.data.options.get("frame") == "base_link":
        return {"frame": {"name": "base_link", "convention": "REP-103: x forward, y left, z up, ground at z = 0"}}
    return {}


def save_student(directory: Path, model, text: torch.Tensor, vocab, cfg, text_space: str | None = None) -> Path:
    """The student checkpoint (models.save_checkpoint) plus its vocabulary's text embeddings, so
    annotation-free evaluation and the online node need no teacher for that vocabulary."""
    from safetensors.torch import save_file

    from clip2scene_ros.models import save_checkpoint

    extra = {
        "stage": "pretrain",
        "vocabulary": vocab.name,
        "class_names": list(vocab.class_names),
        "class_ids": list(vocab.ids),
        "teacher": config_to_dict(cfg.teacher),
        "voxel_size": cfg.voxel_size or model.config.voxel_size,
    }
    if text_space:  # the teacher's content fingerprint: the node refuses another text encoder
        extra["text_space"] = text_space
    save_checkpoint(directory, model, {**extra, **input_frame(cfg)})
    save_file({"text": text.contiguous()}, str(Path(directory) / "text_embeddings.safetensors"))
    return Path(directory)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default="pretrain_synthetic",
        help="YAML file or shipped name in training/configs (default: pretrain_synthetic)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set loss.tau=0.5 --set max_steps=100",
    )
    parser.add_argument("--out-dir", help="output directory (overrides out_dir)")
    parser.add_argument(
        "--resume", default="auto", help="auto (latest checkpoint in out_dir if any), never, or a checkpoint directory"
    )


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set) + ([f"out_dir={args.out_dir}"] if args.out_dir else [])
    cfg = load_config(PretrainConfig, args.config, overrides)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clip2scene train pretrain", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
