"""``clip2scene train finetune``: label-efficient fine-tuning (1/5/10/25/100 % labels) or a linear probe.

The student gets a ``seg`` head with one output per dataset class. Initialisation: from scratch, or
the backbone of a pre-trained checkpoint; ``classifier_init: text`` starts the classifier at the
annotation-free predictor (text embeddings composed with the global head). Loss: cross-entropy +
Lovasz-softmax (the upstream fine-tuning recipe). The shared training loop (``trainer.run_loop``) does
the rest: schedule, accumulation, precision, DDP, checkpoints with resume, logging.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clip2scene_training.config import FinetuneConfig, config_to_dict, load_config
from clip2scene_training.losses import lovasz_softmax
from clip2scene_training.pretrain import StudentForward, lr_schedule
from clip2scene_training.streaming import FinetuneItems, SkipLog, make_loader, to_device
from clip2scene_training.trainer import (
    Stage,
    StepBatchSampler,
    build_optimizer,
    cleanup_distributed,
    run_loop,
    seed_everything,
    setup_distributed,
)

HELP = "fine-tune a (pre-trained) student on a fraction of labelled scans, or train a linear probe"


def select_fraction(n: int, fraction: float, mode: str = "skip", seed: int = 0) -> list[int]:
    """Labelled subset: every round(1/f)-th sample (SLidR's "1 %" = every 100th key frame) or a seeded
    random ceil(n*f) samples; always at least one."""
    if fraction >= 1.0:
        return list(range(n))
    if mode == "skip":
        return list(range(0, n, max(1, round(1.0 / fraction))))
    k = max(1, int(np.ceil(n * fraction)))
    return sorted(np.random.default_rng([seed, 0xF4AC]).choice(n, size=k, replace=False).tolist())


def build_finetune_model(cfg: FinetuneConfig, num_classes: int, class_names: list[str]):
    """MinkUNet with a ``seg`` head; backbone (and optionally classifier) from ``cfg.init``."""
    from safetensors.torch import load_file

    from clip2scene_ros.models import create_model, load_checkpoint

    if cfg.init is None:
        return create_model(cfg.model, **{**cfg.model_overrides, "heads": ["seg"], "embed_dim": num_classes})
    pre, pre_cfg, extra = load_checkpoint(cfg.init)
    arch = {**pre_cfg.to_dict(), **cfg.model_overrides, "heads": ["seg"], "embed_dim": num_classes}
    model = create_model(arch)
    backbone = {k: v for k, v in pre.state_dict().items() if not k.startswith("heads.")}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    if unexpected or any(not k.startswith("heads.") for k in missing):
        raise ValueError(f"{cfg.init}: backbone does not match ({missing}, {unexpected})")
    if cfg.classifier_init == "text":
        pre_names = [n.lower() for n in extra.get("class_names", [])]
        if pre_names != [n.lower() for n in class_names]:
            raise ValueError(
                f"classifier_init: text needs the pre-training vocabulary to be the dataset's classes; "
                f"got {extra.get('class_names')} vs {class_names}; use classifier_init: random"
            )
        text = load_file(str(Path(cfg.init) / "text_embeddings.safetensors"))["text"].float()
        g = pre.heads["global"]
        with torch.no_grad():  # logits_c = t_c . (W p + b): the annotation-free classifier, unnormalised
            model.heads["seg"].weight.copy_(text @ g.weight)
            model.heads["seg"].bias.copy_(text @ g.bias)
    return model


def train(cfg: FinetuneConfig, resume: str = "auto") -> dict:
    # -- devices, seeds ------------------------------------------------------------------------
    dist_info = setup_distributed(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)  # same on every rank: identical init (DDP also broadcasts) and teacher
    out_dir, device = Path(cfg.out_dir), cfg.device

    # -- data ------------------------------------------------------------------------------------
    from clip2scene_ros.datasets import create_dataset

    full = create_dataset(cfg.data.kind, cfg.data.pairing, **cfg.data.options)
    subset = select_fraction(len(full), cfg.label_fraction, cfg.fraction_mode, cfg.seed)
    class_names = list(full.class_names)
    num_classes = len(class_names)

    # -- model and optimizer -------------------------------------------------------------------
    model = build_finetune_model(cfg, num_classes, class_names).to(device)
    voxel_size = cfg.voxel_size or model.config.voxel_size
    head_params = list(model.heads.parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if id(p) not in head_ids]
    if cfg.linear_probe:
        for p in body_params:
            p.requires_grad_(False)
    net = StudentForward(model, voxel_size)
    if dist_info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(net)
    head_lr = cfg.optim.head_lr or cfg.optim.lr
    groups = [{"params": head_params, "base_lr": head_lr}]
    if not cfg.linear_probe:
        groups.append({"params": body_params, "base_lr": cfg.optim.lr})
    optimizer = build_optimizer(groups, cfg.optim)

    # -- data order, loss ----------------------------------------------------------------------
    sampler = StepBatchSampler(len(subset), cfg.batch_size, cfg.grad_accum, dist_info, cfg.seed, 0, 0)
    total_steps = cfg.max_steps or cfg.epochs * sampler.steps_per_epoch
    items = FinetuneItems(full, subset, cfg.seed, cfg.augment)
    skips = SkipLog()

    def batches(start_step: int):
        sampler.start_step, sampler.total_steps = start_step, total_steps
        for batch in make_loader(items, sampler, cfg.loader, device):
            skips.add(batch["skipped"])
            yield to_device(batch, device)

    def loss_fn(outs, batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        clouds, labels = batch["clouds"], batch["labels"]
        losses, parts = [], {"loss_ce": 0.0, "loss_lovasz": 0.0, "points": float(sum(len(c) for c in clouds))}
        for o, y in zip(outs, labels, strict=True):
            logits = o["seg"].float()
            ce = F.cross_entropy(logits, y, ignore_index=-1) if (y >= 0).any() else logits.sum() * 0
            lov = lovasz_softmax(logits.softmax(1), y, ignore_index=-1)
            losses.append(ce + cfg.lovasz_weight * lov)
            parts["loss_ce"] += float(ce.detach()) / len(outs)
            parts["loss_lovasz"] += float(lov.detach()) / len(outs)
        return torch.stack(losses).mean(), parts

    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=1))
    stage = Stage(
        name="finetune",
        model=model,
        optimizer=optimizer,
        batches=batches,
        forward=lambda batch, step: net(batch["clouds"]),
        loss=loss_fn,
        lr_factor=lr_schedule(cfg.optim),
        fields=("loss_ce", "loss_lovasz"),
        counters=("points",),
        net=net if dist_info.enabled else None,
        epoch_of=sampler.epoch_of,
        samples_per_step=sampler.global_batch,
        train_mode=not cfg.linear_probe,  # a frozen backbone keeps its BatchNorm statistics
    )
    result = run_loop(stage, cfg, total_steps, dist_info, out_dir, resume, cfg.optim.grad_clip)

    summary = {
        "stage": "finetune",
        "steps": result.step,
        "final_loss": result.last.get("loss"),
        "labelled_samples": len(subset),
        "label_fraction": cfg.label_fraction,
        "linear_probe": cfg.linear_probe,
        "init": cfg.init,
        "seconds": round(result.seconds, 2),
        "skipped_samples": skips.summary(),
        "student": str(out_dir / "student"),
    }
    if dist_info.is_main:
        from clip2scene_ros.models import save_checkpoint

        save_checkpoint(
            out_dir / "student",
            model,
            {
                "stage": "finetune",
                "class_names": class_names,
                "voxel_size": voxel_size,
                "init": cfg.init,
                "label_fraction": cfg.label_fraction,
                "labelled_samples": len(subset),
                # the frame the clouds were read in, which save_checkpoint records for every reader
                **({"frame": {"name": "base_link"}} if cfg.data.options.get("frame") == "base_link" else {}),
            },
        )
    cleanup_distributed()
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="finetune_synthetic", help="YAML file or shipped name")
    parser.add_argument("--init", help="pre-trained student checkpoint directory (omit: from scratch)")
    parser.add_argument("--label-fraction", type=float, help="fraction of labelled scans, e.g. 0.01")
    parser.add_argument("--linear-probe", action="store_true", help="freeze the backbone")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--out-dir", help="output directory (overrides out_dir)")
    parser.add_argument("--resume", default="auto", help="auto, never, or a checkpoint directory")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.init:
        overrides.append(f"init={args.init}")
    if args.label_fraction is not None:
        overrides.append(f"label_fraction={args.label_fraction}")
    if args.linear_probe:
        overrides.append("linear_probe=true")
    if args.out_dir:
        overrides.append(f"out_dir={args.out_dir}")
    cfg = load_config(FinetuneConfig, args.config, overrides)
    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clip2scene train finetune", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
