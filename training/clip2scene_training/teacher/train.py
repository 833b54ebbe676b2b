"""``clip2scene train teacher``: a tiny open_clip model trained from scratch on synthetic renders.

Objective (patch-level caption contrast): every image crop goes through the MaskCLIP dense path
(the same path used at inference); each patch token is contrasted with one caption embedding per
class, built from a random synonym in a random prompt template and encoded by the text tower, which
is trained jointly. The patch-by-caption scores are bilinearly upsampled to pixels (exactly how
``Teacher.predict`` reads them out) and trained with class-balanced cross-entropy against the camera
label image. Image-level CLIP contrast was measured not to localise, so it is not used. Supervision
comes only from camera images and camera label images, never from LiDAR labels.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..config import TeacherTrainConfig, config_to_dict, load_config

HELP = "train the tiny CLIP teacher from scratch on synthetic camera renders (patch-caption objective)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="teacher_synthetic", help="YAML file or shipped name in training/configs"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set max_steps=100 --set optim.lr=7e-4",
    )  # fmt: skip
    parser.add_argument("--out", help="output teacher directory (overrides out_dir)")
    parser.add_argument("--init", help="start from this teacher directory (same architecture)")
    parser.add_argument("--transfer-from", help="initialise a different model_config from this teacher directory")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    parser.add_argument("--resume", default="auto", help="auto (latest checkpoint in out_dir), never, or a directory")


def load_teacher_config(args: argparse.Namespace) -> TeacherTrainConfig:
    overrides = list(args.set)
    for key, value in (("out_dir", args.out), ("init", args.init), ("transfer_from", args.transfer_from)):
        if value:
            overrides.append(f"{key}={value}")
    if args.no_eval:
        overrides.append("evaluate=false")
    return load_config(TeacherTrainConfig, args.config, overrides)


def _frames(cfg: TeacherTrainConfig) -> tuple[int, ...]:
    from .data import FRAMES_PER_SEED

    return tuple(cfg.frames) if cfg.frames else FRAMES_PER_SEED


def _captions(vocab, templates, rng: np.random.Generator) -> list[str]:
    """One caption per class: a random synonym in a random template."""
    out = []
    for cls in vocab.classes:
        name = cls.names[rng.integers(len(cls.names))]
        out.append(templates[rng.integers(len(templates))].format(name))
    return out


def _caption_contrast(teacher, vocab, templates, rng, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent captions per class: (their mean as the class anchors [C, D], the loss that
    tells each class's captions from the other classes'). A randomly initialised text tower maps all
    captions to nearly the same vector; this contrast separates them."""
    caps = _captions(vocab, templates, rng) + _captions(vocab, templates, rng)
    both = teacher.encode_prompts(caps, grad=True).view(2, len(vocab), -1)  # [2, C, D]
    tt = scale * both[0] @ both[1].T
    classes = torch.arange(len(vocab))
    loss = 0.5 * (F.cross_entropy(tt, classes) + F.cross_entropy(tt.T, classes))
    return F.normalize(both.mean(0), dim=-1), loss


def transfer_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Initialise ``dst`` (an open_clip ViT CLIP) from ``src`` of the same widths but another patch
    size / tile / depth.

    A patch-p kernel that sums k x k blocks of a patch-(k*p) kernel computes exactly what the larger
    patch computes on a k-times nearest-upsampled image, so the finer model starts as the trained one
    run at k-times test-time upsampling. Positional grids are resized; with fewer vision blocks the
    first ones and the last one (the MaskCLIP value-path block) are kept.
    """
    from clip2scene_ros.teacher.dense import resize_grid_embedding

    s_sd, d_sd = src.state_dict(), dst.state_dict()
    s_vis, d_vis = src.visual, dst.visual
    n_src, n_dst = len(s_vis.transformer.resblocks), len(d_vis.transformer.resblocks)
    block_map = list(range(n_dst - 1)) + [n_src - 1] if n_dst <= n_src else list(range(n_dst))
    if n_dst > n_src:
        raise ValueError(f"cannot transfer {n_src} vision blocks to a deeper tower ({n_dst})")
    out = {}
    for key, value in d_sd.items():
        src_key = key
        if key.startswith("visual.transformer.resblocks."):
            i, rest = key[len("visual.transformer.resblocks.") :].split(".", 1)
            src_key = f"visual.transformer.resblocks.{block_map[int(i)]}.{rest}"
        if src_key not in s_sd:
            raise KeyError(f"{src_key} missing in the source model")
        w = s_sd[src_key]
        if key == "visual.conv1.weight" and w.shape != value.shape:
            k = w.shape[-1] // value.shape[-1]
            if k * value.shape[-1] != w.shape[-1] or w.shape[:2] != value.shape[:2]:
                raise ValueError(f"patch kernel {tuple(w.shape)} cannot be block-summed to {tuple(value.shape)}")
            o, c, p = value.shape[0], value.shape[1], value.shape[-1]
            w = w.reshape(o, c, p, k, p, k).sum(dim=(3, 5))
        elif key == "visual.positional_embedding" and w.shape != value.shape:
            w = resize_grid_embedding(w, tuple(s_vis.grid_size), tuple(d_vis.grid_size))
        if w.shape != value.shape:
            raise ValueError(f"{key}: source {tuple(w.shape)} vs target {tuple(value.shape)}")
        out[key] = w.to(value.dtype)
    dst.load_state_dict(out)


def _batch(images, labels, idx, tile, rng, mean, std):
    """Random tile-sized crops with flips and photometric jitter -> (pixels, label crops)."""
    th, tw = tile
    h, w = images.shape[1:3]
    crops, labs = [], []
    for i in idx:
        y0, x0 = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
        img, lab = images[i, y0 : y0 + th, x0 : x0 + tw], labels[i, y0 : y0 + th, x0 : x0 + tw]
        if rng.random() < 0.5:
            img, lab = img.flip(1), lab.flip(1)
        crops.append(img)
        labs.append(lab)
    x = torch.stack(crops).permute(0, 3, 1, 2).float().div_(255.0)
    gain = torch.from_numpy(rng.uniform(0.75, 1.25, (len(idx), 1, 1, 1))).float()
    tint = torch.from_numpy(rng.uniform(-0.05, 0.05, (len(idx), 3, 1, 1))).float()
    x = (x * gain + tint).clamp_(0, 1)
    return (x - mean) / std, torch.stack(labs).long()


def train(cfg: TeacherTrainConfig, resume: str = "auto") -> dict:
    from clip2scene_ros.teacher import TeacherConfig, TextEmbeddingCache, load_templates, load_vocabulary
    from clip2scene_ros.teacher.loading import load_open_clip
    from clip2scene_ros.teacher.teacher import Teacher

    from ..trainer import DistInfo, Stage, learning_rate, run_loop, save_state_dict, seed_everything
    from .data import TRAIN_SEEDS, load_split, parse_seeds, render_split

    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out_dir = Path(cfg.out_dir)
    vocab = load_vocabulary(cfg.vocabulary)
    templates = load_templates(cfg.templates)
    t0 = time.perf_counter()
    split = render_split(
        "train",
        parse_seeds(cfg.train_seeds) if cfg.train_seeds else TRAIN_SEEDS,
        frames=_frames(cfg),
        data_dir=cfg.data_dir,
    )
    render_s = time.perf_counter() - t0
    all_images, all_labels = [split.images], [split.labels]
    for extra in cfg.extra_data:
        more = load_split(extra)
        if more.images.shape[1:] != split.images.shape[1:]:
            raise ValueError(f"{extra}: images {more.images.shape[1:]} differ from {split.images.shape[1:]}")
        all_images.append(more.images)
        all_labels.append(more.labels)
    images = torch.from_numpy(np.concatenate(all_images))
    labels = torch.from_numpy(np.concatenate(all_labels))
    del all_images, all_labels
    if cfg.init:  # continue from an existing teacher directory (same architecture)
        clip = load_open_clip(cfg.init)
    else:
        clip = load_open_clip(cfg.model_config, random_init=True)
        if cfg.transfer_from:
            transfer_weights(load_open_clip(cfg.transfer_from).model, clip.model)
            clip.reset_model_id()
    vis = clip.model_cfg["vision_cfg"]
    tile = tuple(vis["image_size"]) if isinstance(vis["image_size"], list) else (vis["image_size"],) * 2
    full = tuple(images.shape[1:3])
    teacher = Teacher(
        clip,
        TeacherConfig(input_size=full, tile=tile, templates=cfg.templates),
        text_cache=TextEmbeddingCache(persist=False),
    )
    model = clip.model
    num_ids = max(vocab.ids) + 1
    freq = torch.bincount(labels.flatten().long(), minlength=num_ids).double()
    freq[vocab.ignore_index] = 0
    weight = torch.zeros(num_ids)
    present = freq > 0
    weight[present] = (freq[present] / freq[present].sum()).pow(-cfg.class_balance).float()
    weight[present] = weight[present] / weight[present].mean()
    print(
        f"train set: {len(images)} images {full[0]}x{full[1]}, crops {tile}, "
        f"class weights {[round(float(w), 2) for w in weight[1:]]}"
    )

    # The 49k-row BPE token table stays at its random init: only ~50 caption words ever get a
    # gradient, and updating 3M rows with AdamW each step costs more than the rest of the text tower.
    model.token_embedding.weight.requires_grad_(False)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n)]
    from ..trainer import build_optimizer

    opt = build_optimizer(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        cfg.optim,
    )
    mean, std = teacher._mean, teacher._std
    warm = cfg.text_warmup_steps
    class_weight = weight[vocab.ids]
    classes_offset = vocab.ignore_index + 1

    def batches(start_step: int):
        # Crops and captions are drawn from generators seeded by the step, so a resumed run draws
        # exactly what the uninterrupted one would have.
        for step in itertools.count(start_step):
            rng = np.random.default_rng([cfg.seed, step])
            if step < warm:  # caption contrast only: no crops
                yield None, rng
                continue
            idx = rng.integers(0, len(images), cfg.batch_size)
            pixels, lab = _batch(images, labels, idx, tile, rng, mean, std)
            yield (pixels, lab), rng

    def forward(batch, step: int):
        crops, rng = batch
        if crops is None:
            _, text_loss = _caption_contrast(teacher, vocab, templates, rng, 1.0 / 0.07)
            return None, text_loss
        feats = teacher.dense_from_pixels(crops[0])  # [B, D, h, w], L2-normalised
        text, text_loss = _caption_contrast(teacher, vocab, templates, rng, model.logit_scale.exp().clamp(max=100.0))
        return (feats, text), text_loss

    def loss_fn(outputs, batch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        pix_out, text_loss = outputs
        text_loss = text_loss.float()
        if pix_out is None:
            return text_loss, {"text_loss": float(text_loss.detach())}
        feats, text = pix_out
        scale = model.logit_scale.exp().clamp(max=100.0)
        logits = scale * torch.einsum("bdhw,cd->bchw", feats.float(), text.float())
        logits = F.interpolate(logits, size=tile, mode="bilinear", align_corners=False)
        lab = batch[0][1]
        target = lab - classes_offset  # vocabulary ids 1..C -> class index 0..C-1; ignore (0) -> -100
        target[lab == vocab.ignore_index] = -100
        pixel_loss = F.cross_entropy(logits, target, weight=class_weight, ignore_index=-100)
        loss = pixel_loss + cfg.text_loss_weight * text_loss
        return loss, {"pixel_loss": float(pixel_loss.detach()), "text_loss": float(text_loss.detach())}

    def lr_factor(step: int, total: int) -> float:
        if step < warm:  # constant during the caption warm-up, then warm-up + cosine of its own
            return 1.0
        o = cfg.optim
        return learning_rate(step - warm, total - warm, 1.0, o.schedule, o.warmup_steps, o.min_lr_ratio)

    def after_step(step: int) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    stage = Stage(
        name="teacher",
        model=model,
        optimizer=opt,
        batches=batches,
        forward=forward,
        loss=loss_fn,
        lr_factor=lr_factor,
        fields=("pixel_loss", "text_loss"),
        samples_per_step=cfg.batch_size,
        after_step=after_step,
        save_model=save_state_dict,
        grad_params=[p for _, p in params],
    )
    total = warm + int(cfg.max_steps)
    budget = cfg.max_minutes * 60.0 if cfg.max_minutes else None
    result = run_loop(
        stage, cfg, total, DistInfo(), out_dir, resume, cfg.optim.grad_clip, time_budget_s=budget,
        budget_from_step=warm,
    )  # fmt: skip
    clip.reset_model_id()
    model.eval()
    from ..trainer import read_metrics

    log = [
        {k: float(v) for k, v in row.items() if v not in ("", None)}
        for row in read_metrics(out_dir / "metrics.csv")
        if row.get("pixel_loss")
    ]
    return {
        "teacher": teacher,
        "log": log,
        "train_seconds": result.seconds,
        "render_seconds": render_s,
        "steps": result.step - warm,
        "num_images": len(images),
        "tile": tile,
        "input_size": full,
        "data": [str(split.path), *map(str, cfg.extra_data)],
        "vocab": vocab,
        "class_weights": weight.tolist(),
    }


def save_teacher(out: Path, result: dict, cfg: TeacherTrainConfig) -> Path:
    """model.safetensors (fp16) + open_clip_config.json (open_clip local-dir layout) + log."""
    from safetensors.torch import save_file

    teacher = result["teacher"]
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
        for k, v in teacher.model.state_dict().items()
    }
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "objective": "patch-caption"})
    config = {
        "model_cfg": teacher.clip.model_cfg,
        "preprocess_cfg": {
            k: list(v) if isinstance(v, tuple) else v for k, v in teacher.clip.preprocess_cfg.items()
        },
        "clip2scene": {
            "input_size": list(result["input_size"]),
            "tile": list(result["tile"]),
            # A second tile grid shifted by half a tile: +3.1-3.3 pixel mIoU for 2.7x the CPU
            # (measured on the patch-4 teachers), worth it for a teacher whose features are cached.
            "tile_overlap": True,
            "templates": cfg.templates,
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=1))
    (out / "training_log.json").write_text(
        json.dumps(
            {
                "steps": result["steps"],
                "train_seconds": result["train_seconds"],
                "render_seconds": result["render_seconds"],
                "num_images": result["num_images"],
                "config": config_to_dict(cfg),
                "loss": [[int(e["step"]), round(e["pixel_loss"], 4)] for e in result["log"]],
            },
            indent=0,
        )
    )
    _plot_loss(result["log"], out / "training_loss.png")
    return out


def _plot_loss(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([e["step"] for e in log])
    loss = np.array([e["pixel_loss"] for e in log])
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, loss, alpha=0.3, label="loss")
    ax.plot(steps[k - 1 :], smooth, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("pixel CE of patch-caption scores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_card(out: Path) -> Path:
    """README.md model card from training_log.json and eval/metrics.json in ``out``."""
    log = json.loads((out / "training_log.json").read_text())
    cfg = json.loads((out / "open_clip_config.json").read_text())
    metrics_path = out / "eval" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    a = log["config"]
    vis, txt = cfg["model_cfg"]["vision_cfg"], cfg["model_cfg"]["text_cfg"]
    size_mb = (out / "model.safetensors").stat().st_size / 2**20
    cmd = (
        "clip2scene train teacher --config train_config.yaml"
        + (f" --init {a['init']}" if a.get("init") else "")
        + (f" --transfer-from {a['transfer_from']}" if a.get("transfer_from") else "")
    )
    opt = a["optim"]
    if a.get("transfer_from") or a.get("init"):
        origin = f"initialised from the teacher in `{a.get('transfer_from') or a['init']}` and trained on"
    else:
        origin = "trained **from scratch** on"
    overlap = cfg["clip2scene"].get("tile_overlap", False)
    lines = [
        "# clip2scene tiny teacher (synthetic world)",
        "",
        f"A small open_clip model {origin} camera images of the synthetic world "
        "(`clip2scene_ros.sim`). It stands in for a pretrained CLIP ViT-B/16 where no weights can be "
        "downloaded: the demo, the tests and the 3D student's annotation-free training use it by default. "
        "It only knows the synthetic world; use a real open_clip checkpoint for real data.",
        "",
        "## Architecture",
        f"- open_clip `CLIP`, config `{a['model_config']}` (in `open_clip_config.json`, open_clip local-dir layout)",
        f"- image tower: ViT, patch {vis['patch_size']}, width {vis['width']}, {vis['layers']} layers, "
        f"input {vis['image_size'][0]}x{vis['image_size'][1]}; text tower: width {txt['width']}, {txt['layers']} "
        f"layers, context {txt['context_length']}, open_clip BPE tokenizer; embedding dim "
        f"{cfg['model_cfg']['embed_dim']}",
        f"- inference: images resized to {cfg['clip2scene']['input_size'][0]}x{cfg['clip2scene']['input_size'][1]} "
        f"and run as {cfg['clip2scene']['tile'][0]}x{cfg['clip2scene']['tile'][1]} tiles (the training crop size: "
        f"a {vis['patch_size']}-pixel token grid at the training scale)"
        + (", averaged with a second grid shifted by half a tile (`tile_overlap`)" if overlap else "")
        + f", MaskCLIP dense path, prompt templates `{cfg['clip2scene']['templates']}`",
        f"- `model.safetensors`: {size_mb:.1f} MB, fp16",
        "",
        "## Objective",
        "Patch-level caption contrast (image-level CLIP contrast was measured not to localise): each random "
        "crop goes through the MaskCLIP dense path (last block = value path), each patch token is scored "
        "against one caption per class (random synonym from `config/vocab/synthetic.yaml` in a random "
        "template of the `default` set), the text tower being trained jointly with a learned temperature. "
        "Scores are bilinearly upsampled to pixels, as at inference, and trained with class-balanced "
        f"cross-entropy (weight = frequency^-{a['class_balance']}) against the **camera label images**. "
        "No LiDAR labels are used. The 49k-row token embedding table keeps its random initialisation "
        "(only caption words would be updated).",
        "",
        "## Data",
        f"- {log['num_images']} camera images (224x400, six cameras per frame), scene seeds "
        f"{a.get('train_seeds') or '900000:900060'} (+ extra data: {a.get('extra_data') or 'none'}); "
        "disjoint from the sim's train/val/test seed splits (`config/sim/splits.yaml`)",
        "- held-out evaluation: scene seeds 950000:950008, frames 0/40/80/120, all six cameras",
        "",
        "## Training",
        f"- `{cmd}` (`train_config.yaml` beside the weights holds every setting: AdamW lr {opt['lr']}, "
        f"{a['text_warmup_steps']} caption warm-up steps, class balance {a['class_balance']}, batch {a['batch_size']})",
        f"- {log['steps']} steps of {a['batch_size']} crops in **{log['train_seconds'] / 60:.1f} min** on the "
        f"shared 2-core CPU ({a['num_threads']} threads; rendering the images took "
        f"{log['render_seconds'] / 60:.1f} min "
        "once); loss curve: `training_loss.png`",
        "",
        "## Results (`clip2scene evaluate teacher`)",
    ]
    if metrics:
        lines += [
            f"- pixel mIoU **{metrics['miou']:.1f}**, pixel accuracy {metrics['pixel_accuracy']:.1f} on "
            f"{metrics['num_images']} held-out images ({metrics['seconds_per_image']:.2f} s/image)",
            "",
            "| class | IoU |",
            "|---|---|",
        ]
        for name, v in metrics["per_class_iou"].items():
            lines.append(f"| {name} | {'absent' if v is None else f'{v:.1f}'} |")
    else:
        lines.append("- not evaluated yet: run `clip2scene evaluate teacher --teacher <this dir>`")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out / "README.md"


def run(args: argparse.Namespace) -> int:
    cfg = load_teacher_config(args)
    result = train(cfg, resume=args.resume)
    out = save_teacher(Path(cfg.out_dir), result, cfg)
    print(f"trained {result['steps']} steps in {result['train_seconds'] / 60:.1f} min; wrote {out}")
    if cfg.evaluate:
        from . import evaluate

        eval_args = argparse.Namespace(
            teacher=str(out),
            weights=None,
            vocab=cfg.vocabulary,
            val_seeds=cfg.val_seeds,
            data_dir=cfg.data_dir,
            limit=0,
            frames=",".join(map(str, cfg.frames)) if cfg.frames else None,
            out=str(out / "eval"),
            key_smoothing=None,
            prompt_denoising=None,
            threads=cfg.num_threads or 1,
        )
        evaluate.run(eval_args)
    print(f"model card: {write_card(out)}")
    return 0
