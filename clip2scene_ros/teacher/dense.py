"""MaskCLIP dense features from an open_clip image tower (ViT and ModifiedResNet).

ViT: the last transformer block keeps only its value path (no q/k attention), so every patch token
stays a local feature; then CLIP's final LayerNorm and projection put it in the text space.
ResNet: the attention pool's value and output projections are applied to every spatial position.
Positional embeddings are resized to the input's token grid, so inputs need not be square.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def resize_grid_embedding(
    pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Bicubically resize the spatial part of a [prefix + h*w, C] positional embedding."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    n_prefix = pos.shape[0] - old_grid[0] * old_grid[1]
    prefix, grid = pos[:n_prefix], pos[n_prefix:]
    grid = grid.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1)], dim=0)


def _old_grid(n_tokens: int, hint: tuple[int, int]) -> tuple[int, int]:
    if hint[0] * hint[1] == n_tokens:
        return hint
    side = int(math.isqrt(n_tokens))
    return side, n_tokens // side


def _qkv_weights(attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The packed in-projection of nn.MultiheadAttention or open_clip's Attention."""
    weight = getattr(attn, "in_proj_weight", None)
    if weight is None:  # nn.MultiheadAttention with separate k/v dims
        weight = torch.cat([attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight], dim=0)
    return weight, getattr(attn, "in_proj_bias", None), weight.shape[1]


def _value_path(
    block: nn.Module, x: torch.Tensor, want_keys: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MaskCLIP's last block: x + out_proj(v_proj(ln_1(x))), then the block's MLP residual."""
    y = block.ln_1(x)
    weight, bias, width = _qkv_weights(block.attn)
    v = F.linear(y, weight[2 * width :], None if bias is None else bias[2 * width :])
    keys = None
    if want_keys:
        keys = F.linear(y, weight[width : 2 * width], None if bias is None else bias[width : 2 * width])
    attn = block.attn
    if getattr(attn, "head_scale", None) is not None:  # NormFormer per-head scaling
        b, n, _ = v.shape
        v = (v.view(b, n, attn.num_heads, -1) * attn.head_scale.view(1, 1, attn.num_heads, 1)).view(b, n, -1)
    if hasattr(attn, "ln_inner"):
        v = attn.ln_inner(v)
    v = attn.out_proj(v)
    if hasattr(block, "ln_attn"):
        v = block.ln_attn(v)
    x = x + block.ls_1(v)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, keys


def vit_dense(visual: nn.Module, pixels: torch.Tensor, want_keys: bool = False):
    """Dense MaskCLIP tokens of an open_clip VisionTransformer.

    pixels: [B, 3, H, W] normalised; H, W multiples of the patch size.
    Returns (features [B, D, h, w] not normalised, keys [B, width, h, w] or None).
    """
    if getattr(visual, "attn_pool", None) is not None:
        raise NotImplementedError("MaskCLIP dense features need a ViT without attentional pooling (CoCa)")
    x = visual.conv1(pixels)
    b, width, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, -1, -1)
    x = torch.cat([cls, x], dim=1)
    pos = visual.positional_embedding
    pos = resize_grid_embedding(pos, _old_grid(pos.shape[0] - 1, tuple(visual.grid_size)), (gh, gw))
    x = visual.ln_pre(x + pos.to(x.dtype))
    transformer = visual.transformer
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in transformer.resblocks[:-1]:
        x = block(x)
    if not batch_first:
        x = x.transpose(0, 1)
    x, keys = _value_path(transformer.resblocks[-1], x, want_keys)
    x = visual.ln_post(x[:, 1:])
    if visual.proj is not None:
        x = x @ visual.proj
    feats = x.transpose(1, 2).reshape(b, -1, gh, gw)
    if keys is not None:
        keys = keys[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw)
    return feats, keys


def resnet_dense(visual: nn.Module, pixels: torch.Tensor, want_keys: bool = False):
    """Dense features of an open_clip ModifiedResNet: attention-pool value path at every cell."""
    x = visual.stem(pixels)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    pool = visual.attnpool
    b, c, gh, gw = x.shape
    tokens = x.flatten(2).transpose(1, 2)  # [B, N, C]
    pos = pool.positional_embedding
    pos = resize_grid_embedding(pos, _old_grid(pos.shape[0] - 1, (0, 0)), (gh, gw))[1:]
    tokens = tokens + pos.to(tokens.dtype)
    feats = pool.c_proj(pool.v_proj(tokens))
    keys = pool.k_proj(tokens) if want_keys else None
    feats = feats.transpose(1, 2).reshape(b, -1, gh, gw)
    if keys is not None:
        keys = keys.transpose(1, 2).reshape(b, -1, gh, gw)
    return feats, keys


def dense_tokens(visual: nn.Module, pixels: torch.Tensor, want_keys: bool = False):
    """Dispatch on the image tower type; see vit_dense / resnet_dense."""
    if hasattr(visual, "transformer") and hasattr(visual, "conv1"):
        return vit_dense(visual, pixels, want_keys)
    if hasattr(visual, "attnpool"):
        return resnet_dense(visual, pixels, want_keys)
    raise NotImplementedError(
        f"MaskCLIP dense features are implemented for open_clip ViT and ModifiedResNet towers, "
        f"not {type(visual).__name__} (timm towers are not supported)"
    )


def patch_stride(visual: nn.Module) -> int:
    """Pixels per output cell: ViT patch size, or 32 for the ResNet."""
    if hasattr(visual, "patch_size"):
        ps = visual.patch_size
        return int(ps[0] if isinstance(ps, (tuple, list)) else ps)
    return 32


def key_smoothing(feats: torch.Tensor, keys: torch.Tensor, threshold: float) -> torch.Tensor:
    """MaskCLIP key smoothing: average each cell's feature over cells with similar keys.

    feats [B, D, h, w] (normalised), keys [B, K, h, w]; cells whose key cosine similarity is below
    ``threshold`` get zero weight. Returns L2-normalised features.
    """
    b, d, h, w = feats.shape
    k = F.normalize(keys.flatten(2), dim=1)  # [B, K, N]
    sim = k.transpose(1, 2) @ k  # [B, N, N]
    weight = sim * (sim >= threshold)
    smoothed = feats.flatten(2) @ weight.transpose(1, 2)  # [B, D, N]
    return F.normalize(smoothed, dim=1).view(b, d, h, w)


def prompt_denoising(logits: torch.Tensor, threshold: float, temperature: float = 100.0) -> torch.Tensor:
    """MaskCLIP prompt denoising: drop classes whose best per-image confidence is below threshold.

    logits [B, C, h, w] (cosine similarities). At least the most confident class is always kept.
    """
    probs = torch.softmax(logits * temperature, dim=1)
    best = probs.flatten(2).amax(dim=2)  # [B, C]
    drop = best < threshold
    keep_top = best.argmax(dim=1, keepdim=True)
    drop.scatter_(1, keep_top, False)
    return logits.masked_fill(drop[:, :, None, None], float("-inf"))
