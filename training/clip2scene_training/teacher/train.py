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
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HELP = "train the tiny CLIP teacher from scratch on synthetic camera renders (patch-caption objective)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clip2scene_ros.teacher.loading import ASSET_DIR

    parser.add_argument(
        "--model-config",
        default="c2s-tiny-vit-p8",
        help="open_clip JSON config (name in clip2scene_ros/teacher/model_configs or a path)",
    )
    parser.add_argument("--out", default=str(ASSET_DIR), help="output teacher directory")
    parser.add_argument("--data-dir", default=None, help="where rendered splits are cached (npz)")
    parser.add_argument(
        "--train-seeds", default=None, help="scene seeds 'a:b' or 'a,b,c' (default: teacher train)"
    )
    parser.add_argument(
        "--frames", default=None, help="frame indices per scene, e.g. '0,40' (default 0,40,80,120)"
    )
    parser.add_argument(
        "--extra-data",
        nargs="*",
        default=[],
        help="more pre-rendered .npz splits (images, labels) to train on, e.g. older sim versions",
    )
    parser.add_argument("--val-seeds", default=None, help="held-out scene seeds for the final evaluation")
    parser.add_argument(
        "--vocab", default="synthetic", help="vocabulary whose classes caption the label images"
    )
    parser.add_argument(
        "--templates", default="default", help="prompt template set (config/vocab/templates.yaml)"
    )
    parser.add_argument("--steps", type=int, default=2000, help="maximum optimiser steps")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=16.0,
        help="time budget; the LR schedule is fitted to it after the first steps",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=25)
    parser.add_argument(
        "--class-balance",
        type=float,
        default=0.5,
        help="class weight = (pixel frequency)^-x; 0 = plain cross-entropy",
    )
    parser.add_argument(
        "--text-loss-weight",
        type=float,
        default=1.0,
        help="weight of the caption-vs-caption contrast that separates the classes' texts",
    )
    parser.add_argument(
        "--text-warmup-steps",
        type=int,
        default=150,
        help="text-only caption-contrast steps before joint training (gives the patch loss distinct anchors)",
    )
    parser.add_argument(
        "--init", default=None, help="start from this teacher directory instead of random weights"
    )
    parser.add_argument(
        "--transfer-from",
        default=None,
        help="teacher directory whose weights initialise a *different* --model-config (e.g. patch 8 -> 4): "
        "patch kernel block-summed, positional grid resized, first blocks + last block kept",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")


def _frames(args: argparse.Namespace) -> tuple[int, ...]:
    from .data import FRAMES_PER_SEED

    spec = getattr(args, "frames", None)
    return tuple(int(f) for f in spec.split(",")) if spec else FRAMES_PER_SEED


def _captions(vocab, templates, rng: np.random.Generator) -> list[str]:
    """One caption per class: a random synonym in a random template."""
    out = []
    for cls in vocab.classes:
        name = cls.names[rng.integers(len(cls.names))]
        out.append(templates[rng.integers(len(templates))].format(name))
    return out


def _text_warmup(teacher, vocab, templates, rng, opt, args) -> float:
    """Caption-vs-caption contrast only: separates the classes' text embeddings before joint training."""
    start = time.perf_counter()
    scale = 1.0 / 0.07
    classes = torch.arange(len(vocab))
    for group in opt.param_groups:
        group["lr"] = args.lr
    for _ in range(args.text_warmup_steps):
        caps = _captions(vocab, templates, rng) + _captions(vocab, templates, rng)
        both = teacher.encode_prompts(caps, grad=True).view(2, len(vocab), -1)
        tt = scale * both[0] @ both[1].T
        loss = 0.5 * (F.cross_entropy(tt, classes) + F.cross_entropy(tt.T, classes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if args.text_warmup_steps:
        print(
            f"text warm-up: {args.text_warmup_steps} steps, caption loss {loss.item():.3f}, "
            f"{time.perf_counter() - start:.0f} s"
        )
    return time.perf_counter() - start


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


def train(args: argparse.Namespace) -> dict:
    from clip2scene_ros.teacher import TeacherConfig, TextEmbeddingCache, load_templates, load_vocabulary
    from clip2scene_ros.teacher.loading import load_open_clip
    from clip2scene_ros.teacher.teacher import Teacher

    from .data import TRAIN_SEEDS, load_split, parse_seeds, render_split

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    vocab = load_vocabulary(args.vocab)
    templates = load_templates(args.templates)
    t0 = time.perf_counter()
    split = render_split(
        "train",
        parse_seeds(args.train_seeds) if args.train_seeds else TRAIN_SEEDS,
        frames=_frames(args),
        data_dir=args.data_dir,
    )
    render_s = time.perf_counter() - t0
    all_images, all_labels = [split.images], [split.labels]
    for extra in args.extra_data:
        more = load_split(extra)
        if more.images.shape[1:] != split.images.shape[1:]:
            raise ValueError(f"{extra}: images {more.images.shape[1:]} differ from {split.images.shape[1:]}")
        all_images.append(more.images)
        all_labels.append(more.labels)
    images = torch.from_numpy(np.concatenate(all_images))
    labels = torch.from_numpy(np.concatenate(all_labels))
    del all_images, all_labels
    if args.init and getattr(args, "transfer_from", None):
        raise ValueError("--init (same architecture) and --transfer-from (another one) exclude each other")
    if args.init:  # continue from an existing teacher directory (same architecture)
        clip = load_open_clip(args.init)
    else:
        clip = load_open_clip(args.model_config, random_init=True)
        if getattr(args, "transfer_from", None):
            transfer_weights(load_open_clip(args.transfer_from).model, clip.model)
            clip.reset_model_id()
    vis = clip.model_cfg["vision_cfg"]
    tile = tuple(vis["image_size"]) if isinstance(vis["image_size"], list) else (vis["image_size"],) * 2
    full = tuple(images.shape[1:3])
    teacher = Teacher(
        clip,
        TeacherConfig(input_size=full, tile=tile, templates=args.templates),
        text_cache=TextEmbeddingCache(persist=False),
    )
    model = clip.model.train()
    num_ids = max(vocab.ids) + 1
    freq = torch.bincount(labels.flatten().long(), minlength=num_ids).double()
    freq[vocab.ignore_index] = 0
    weight = torch.zeros(num_ids)
    present = freq > 0
    weight[present] = (freq[present] / freq[present].sum()).pow(-args.class_balance).float()
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
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    mean, std = teacher._mean, teacher._std
    text_s = _text_warmup(teacher, vocab, templates, rng, opt, args)
    total = args.steps
    budget = args.max_minutes * 60.0 - text_s
    log: list[dict] = []
    start = time.perf_counter()
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="teacher", unit="step")
    except ImportError:
        bar = None
    step = 0
    while step < total:
        elapsed = time.perf_counter() - start
        if step == 10:  # fit the cosine schedule to the time budget
            total = max(20, min(args.steps, int(budget / (elapsed / step))))
            if bar is not None:
                bar.total = total
        if elapsed > budget * 1.05:
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if step >= args.warmup:
            lr = args.lr * (
                0.03
                + 0.97 * 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, total - args.warmup)))
            )
        for group in opt.param_groups:
            group["lr"] = lr
        idx = rng.integers(0, len(images), args.batch_size)
        pixels, lab = _batch(images, labels, idx, tile, rng, mean, std)
        feats = teacher.dense_from_pixels(pixels)  # [B, D, h, w], L2-normalised
        # two independent captions per class: their mean is the class anchor of the patch loss, and
        # telling them apart from other classes' captions separates the text embeddings early on
        # (a randomly initialised text tower maps all captions to nearly the same vector)
        caps = _captions(vocab, templates, rng) + _captions(vocab, templates, rng)
        both = teacher.encode_prompts(caps, grad=True).view(2, len(vocab), -1)  # [2, C, D]
        text = F.normalize(both.mean(0), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100.0)
        tt = scale * both[0] @ both[1].T
        classes = torch.arange(len(vocab))
        text_loss = 0.5 * (F.cross_entropy(tt, classes) + F.cross_entropy(tt.T, classes))
        logits = scale * torch.einsum("bdhw,cd->bchw", feats, text)
        logits = F.interpolate(logits, size=tile, mode="bilinear", align_corners=False)
        # vocabulary ids 1..C -> class index 0..C-1; ignore (0) -> -100
        target = lab - (vocab.ignore_index + 1)
        target[lab == vocab.ignore_index] = -100
        pixel_loss = F.cross_entropy(logits, target, weight=weight[vocab.ids], ignore_index=-100)
        loss = pixel_loss + args.text_loss_weight * text_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        log.append(
            {
                "step": step,
                "loss": pixel_loss.item(),
                "text_loss": text_loss.item(),
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
        )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(pix=f"{pixel_loss.item():.3f}", txt=f"{text_loss.item():.3f}")
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - start + text_s
    clip.reset_model_id()
    model.eval()
    return {
        "teacher": teacher,
        "log": log,
        "train_seconds": train_s,
        "render_seconds": render_s,
        "steps": step,
        "num_images": len(images),
        "tile": tile,
        "input_size": full,
        "data": [str(split.path), *map(str, args.extra_data)],
        "vocab": vocab,
        "class_weights": weight.tolist(),
    }


def save_teacher(out: Path, result: dict, args: argparse.Namespace) -> Path:
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
            "templates": args.templates,
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
                "args": {k: v for k, v in vars(args).items() if not callable(v)},
                "loss": [[e["step"], round(e["loss"], 4)] for e in result["log"]],
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
    loss = np.array([e["loss"] for e in log])
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
    a = log["args"]
    vis, txt = cfg["model_cfg"]["vision_cfg"], cfg["model_cfg"]["text_cfg"]
    size_mb = (out / "model.safetensors").stat().st_size / 2**20
    cmd = (
        f"clip2scene train teacher --model-config {a['model_config']} --batch-size {a['batch_size']} "
        f"--lr {a['lr']} --warmup {a['warmup']} --class-balance {a['class_balance']} "
        f"--text-warmup-steps {a.get('text_warmup_steps', 0)} --threads {a['threads']} --max-minutes {a['max_minutes']}"
        + (f" --train-seeds {a['train_seeds']}" if a.get("train_seeds") else "")
        + (" --extra-data " + " ".join(a["extra_data"]) if a.get("extra_data") else "")
        + (f" --init {a['init']}" if a.get("init") else "")
        + (f" --transfer-from {a['transfer_from']}" if a.get("transfer_from") else "")
        + (f" --steps {a['steps']}" if a.get("steps") != 2000 else "")
    )
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
        f"- `{cmd}`",
        f"- {log['steps']} steps of {a['batch_size']} crops in **{log['train_seconds'] / 60:.1f} min** on the "
        f"shared 2-core CPU ({a['threads']} threads; rendering the images took {log['render_seconds'] / 60:.1f} min "
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
    result = train(args)
    out = save_teacher(Path(args.out), result, args)
    print(f"trained {result['steps']} steps in {result['train_seconds'] / 60:.1f} min; wrote {out}")
    if not args.no_eval:
        from . import evaluate

        eval_args = argparse.Namespace(
            teacher=str(out),
            weights=None,
            vocab=args.vocab,
            val_seeds=args.val_seeds,
            data_dir=args.data_dir,
            limit=0,
            frames=args.frames,
            out=str(out / "eval"),
            key_smoothing=None,
            prompt_denoising=None,
            threads=args.threads,
        )
        evaluate.run(eval_args)
    print(f"model card: {write_card(out)}")
    return 0
