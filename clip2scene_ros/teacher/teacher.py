"""The CLIP teacher: dense MaskCLIP pixel features and text embeddings in one space."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .dense import dense_tokens, key_smoothing, patch_stride, prompt_denoising
from .loading import LoadedClip, load_open_clip
from .text_cache import TextEmbeddingCache, text_key
from .vocabulary import Vocabulary, load_templates, load_vocabulary

# open_clip's SimpleTokenizer memoises the BPE of every distinct word it sees, with no bound: a peer
# sending new query words would grow it for the life of a node. Past this many words it starts over.
TOKENIZER_CACHE_ENTRIES = 20_000


@dataclass(frozen=True)
class TeacherConfig:
    """Inference options; a teacher directory can store defaults under ``"clip2scene"``."""

    # Images are resized to (H, W) before the image tower (224x416 is CLIP2Scene's crop);
    # None keeps the native size, rounded down to a multiple of the patch stride.
    input_size: tuple[int, int] | None = (224, 416)
    # Run the tower on non-overlapping tiles of this size (test-time upsampling: a 448x832 input
    # in 224x416 tiles gives a 28x52 grid at the scale the model was trained on).
    tile: tuple[int, int] | None = None
    # Average a second tile grid shifted by about half a tile (image edges reflect-padded), so
    # no pixel only ever sees the border of a tile: about 2.7x the single-grid cost.
    tile_overlap: bool = False
    # Average with the horizontally mirrored image (2x the cost); dense_features/predict only.
    flip_average: bool = False
    templates: str = "default"
    key_smoothing: float | None = None  # MaskCLIP key-smoothing threshold (cosine), None = off
    prompt_denoising: float | None = None  # MaskCLIP prompt-denoising threshold, None = off
    batch_size: int = 8
    text_batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("input_size", "tile"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(int(v) for v in value)
                if len(value) != 2 or min(value) <= 0:
                    raise ValueError(f"TeacherConfig.{name} must be (height, width) > 0, got {value}")
                object.__setattr__(self, name, value)
        if self.tile_overlap and self.tile is None:
            raise ValueError("TeacherConfig.tile_overlap needs a tile size")
        if self.tile is not None and self.input_size is not None:
            if self.input_size[0] % self.tile[0] or self.input_size[1] % self.tile[1]:
                raise ValueError(f"TeacherConfig.tile {self.tile} must divide input_size {self.input_size}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown teacher options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


ImageBatch = np.ndarray | torch.Tensor


class Teacher:
    """Frozen open_clip model exposing MaskCLIP dense features and cached text embeddings."""

    def __init__(
        self,
        clip: LoadedClip,
        config: TeacherConfig | None = None,
        device: str | torch.device = "cpu",
        text_cache: TextEmbeddingCache | None = None,
    ):
        self.clip = clip
        self.device = torch.device(device)
        stored = {k: v for k, v in clip.teacher_cfg.items() if k in {f.name for f in fields(TeacherConfig)}}
        self.config = config or TeacherConfig.from_dict(stored)
        self.text_cache = text_cache if text_cache is not None else TextEmbeddingCache()
        self.model.to(self.device).eval()
        self.stride = patch_stride(self.model.visual)
        self._mean = torch.tensor(clip.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(clip.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    # -- properties -------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        return self.clip.model

    @property
    def embed_dim(self) -> int:
        return int(self.clip.model_cfg["embed_dim"])

    @property
    def model_id(self) -> str:
        return self.clip.model_id()

    def with_config(self, **changes: Any) -> Teacher:
        """A view of the same model with other inference options (shares weights and caches)."""
        return Teacher(self.clip, replace(self.config, **changes), self.device, self.text_cache)

    # -- images -----------------------------------------------------------------------------
    def preprocess(self, images: ImageBatch, size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 RGB [B,H,W,3] (or one [H,W,3]) -> CLIP-normalised float [B,3,H',W']."""
        if isinstance(images, torch.Tensor):
            x = images
        else:
            arr = np.ascontiguousarray(images)
            # zero-copy message views are read-only, which torch.from_numpy warns about; the copy
            # costs ~1 ms for a 1600x900 image and only happens for such views
            x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be uint8 RGB [B,H,W,3], got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            raise ValueError(
                f"images must be uint8 RGB (0..255), got {x.dtype}; convert with .astype(np.uint8)"
            )
        x = x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        target = size or self.config.input_size
        if target is None:
            target = (x.shape[2] // self.stride * self.stride, x.shape[3] // self.stride * self.stride)
        if target[0] % self.stride or target[1] % self.stride:
            raise ValueError(f"input size {target} must be a multiple of the patch stride {self.stride}")
        if tuple(x.shape[2:]) != tuple(target):
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    def dense_from_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Differentiable MaskCLIP features of normalised pixels [B,3,H,W] -> [B,D,H/s,W/s]."""
        want_keys = self.config.key_smoothing is not None
        tile = self.config.tile
        if tile is not None and tuple(pixels.shape[2:]) != tuple(tile):
            return self._tiled(pixels, tile, normalize)
        feats, keys = dense_tokens(self.model.visual, pixels, want_keys)
        if normalize or keys is not None:
            feats = F.normalize(feats, dim=1)
        if keys is not None:
            feats = key_smoothing(feats, keys, float(self.config.key_smoothing))
        return feats

    def _tiled(self, pixels: torch.Tensor, tile: tuple[int, int], normalize: bool) -> torch.Tensor:
        h, w = pixels.shape[2:]
        if h % tile[0] or w % tile[1]:
            raise ValueError(f"input {h}x{w} is not a whole number of {tile[0]}x{tile[1]} tiles")
        feats = self._tile_grid(pixels, tile, normalize)
        if not self.config.tile_overlap:
            return feats
        # The shifted grid starts half a tile (in whole tokens) plus half a token away and is
        # read back at the nearest token: its tokens straddle the first grid's token borders,
        # which measured +0.8 pixel mIoU over a token-aligned shift on the synthetic teacher.
        sy, sx = (round(t / 2 / self.stride) * self.stride + self.stride // 2 for t in tile)
        padded = F.pad(pixels, (sx, tile[1] - sx, sy, tile[0] - sy), mode="reflect")
        shifted = self._tile_grid(padded, tile, normalize)
        oy, ox = sy // self.stride, sx // self.stride
        feats = feats + shifted[:, :, oy : oy + feats.shape[2], ox : ox + feats.shape[3]]
        return F.normalize(feats, dim=1) if normalize else feats / 2

    def _tile_grid(self, pixels: torch.Tensor, tile: tuple[int, int], normalize: bool) -> torch.Tensor:
        b, _, h, w = pixels.shape
        ny, nx = h // tile[0], w // tile[1]
        crops = pixels.unfold(2, tile[0], tile[0]).unfold(3, tile[1], tile[1])  # [B,3,ny,nx,th,tw]
        crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(b * ny * nx, 3, tile[0], tile[1])
        sub = self.with_config(tile=None, tile_overlap=False) if self.config.tile is not None else self
        feats = sub.dense_from_pixels(crops, normalize)  # [B*ny*nx, D, th', tw']
        d, th, tw = feats.shape[1:]
        feats = feats.view(b, ny, nx, d, th, tw).permute(0, 3, 1, 4, 2, 5)
        return feats.reshape(b, d, ny * th, nx * tw)

    @torch.no_grad()
    def dense_features(self, images: ImageBatch, size: tuple[int, int] | None = None) -> torch.Tensor:
        """L2-normalised dense features [B, D, h, w] (float32) of uint8 RGB images [B,H,W,3]."""
        arr = images if isinstance(images, torch.Tensor) else np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        bs = self.config.batch_size
        out = []
        for s in range(0, len(arr), bs):
            pixels = self.preprocess(arr[s : s + bs], size)
            feats = self.dense_from_pixels(pixels).float()
            if self.config.flip_average:
                mirrored = self.dense_from_pixels(pixels.flip(3)).float().flip(3)
                feats = F.normalize(feats + mirrored, dim=1)
            out.append(feats)
        return torch.cat(out)

    # -- text -------------------------------------------------------------------------------
    def _templates(self, templates: str | Sequence[str] | None) -> tuple[str, ...]:
        return load_templates(templates if templates is not None else self.config.templates)

    def encode_prompts(self, prompts: Sequence[str], grad: bool = False) -> torch.Tensor:
        """Raw text-tower embeddings [N, D] (L2-normalised) of literal prompts, no cache."""
        embs = []
        with torch.set_grad_enabled(grad):
            for start in range(0, len(prompts), self.config.text_batch_size):
                tokens = self.clip.tokenizer(list(prompts[start : start + self.config.text_batch_size]))
                bound_tokenizer_cache(self.clip.tokenizer)
                embs.append(F.normalize(self.model.encode_text(tokens.to(self.device)).float(), dim=-1))
        return torch.cat(embs)

    @torch.no_grad()
    def encode_text(
        self, texts: Sequence[str] | str, templates: str | Sequence[str] | None = None
    ) -> torch.Tensor:
        """Template-ensembled, L2-normalised embeddings [T, D] of phrases (cached)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("encode_text needs at least one phrase")
        tpl = self._templates(templates)
        model_id = self.model_id
        keys = [text_key(model_id, tpl, t) for t in texts]
        result: list[torch.Tensor | None] = [self.text_cache.get(k) for k in keys]
        missing = sorted({t for t, r in zip(texts, result, strict=True) if r is None})
        if missing:
            prompts = [template.format(t) for t in missing for template in tpl]
            embs = self.encode_prompts(prompts).view(len(missing), len(tpl), -1)
            fresh = F.normalize(embs.mean(dim=1), dim=-1).cpu()
            computed = dict(zip(missing, fresh, strict=True))
            for t, e in computed.items():
                self.text_cache.put(text_key(model_id, tpl, t), e)
            # from the computed values, not the cache: a bounded cache may already have evicted some
            result = [r if r is not None else computed[t] for t, r in zip(texts, result, strict=True)]
        return torch.stack([r for r in result]).to(self.device)

    def encode_vocabulary(
        self,
        vocab: Vocabulary | str | Sequence[str | Sequence[str]],
        templates: str | Sequence[str] | None = None,
    ) -> torch.Tensor:
        """One L2-normalised embedding per class [C, D]: its synonyms' embeddings averaged."""
        vocab = as_vocabulary(vocab)
        names = vocab.prompt_names()
        flat = [n for syn in names for n in syn]
        tpl = templates if templates is not None else vocab.templates
        embs = self.encode_text(flat, tpl)
        out, i = [], 0
        for syn in names:
            out.append(F.normalize(embs[i : i + len(syn)].mean(dim=0), dim=-1))
            i += len(syn)
        return torch.stack(out)

    # -- prediction -------------------------------------------------------------------------
    def logits(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarities [B, C, h, w] of dense features [B,D,h,w] and text [C,D]."""
        scores = torch.einsum("bdhw,cd->bchw", features, text.to(features.dtype))
        if self.config.prompt_denoising is not None:
            scores = prompt_denoising(scores, float(self.config.prompt_denoising))
        return scores

    @torch.no_grad()
    def predict(
        self,
        images: ImageBatch,
        vocab: Vocabulary | str | Sequence[str | Sequence[str]],
        return_scores: bool = False,
    ):
        """Per-pixel labels [B,H,W] (int64, the vocabulary's ids, 1..C) at the input resolution.

        With ``return_scores`` also the per-pixel cosine score of the winning class [B,H,W].
        """
        vocab = as_vocabulary(vocab)
        arr = images if isinstance(images, torch.Tensor) else np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        text = self.encode_vocabulary(vocab)
        ids = torch.tensor(vocab.ids, device=self.device)
        labels, scores = [], []
        for start in range(0, arr.shape[0], self.config.batch_size):
            chunk = arr[start : start + self.config.batch_size]
            logit = self.logits(self.dense_features(chunk), text)
            logit = F.interpolate(logit, size=tuple(chunk.shape[1:3]), mode="bilinear", align_corners=False)
            best, idx = logit.max(dim=1)
            labels.append(ids[idx])
            scores.append(best)
        labels_t = torch.cat(labels)
        return (labels_t, torch.cat(scores)) if return_scores else labels_t


def as_vocabulary(vocab: Vocabulary | str | os.PathLike | Sequence[str | Sequence[str]]) -> Vocabulary:
    if isinstance(vocab, Vocabulary):
        return vocab
    if isinstance(vocab, (str, os.PathLike)):
        return load_vocabulary(vocab)
    return Vocabulary.from_names(list(vocab))


def create_teacher(
    model: str | os.PathLike = "default",
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    random_init: bool = False,
    text_cache: TextEmbeddingCache | None = None,
    **options: Any,
) -> Teacher:
    """Build a teacher offline.

    model: ``"default"`` (bundled tiny teacher), an open_clip architecture (``"ViT-B-16"``, needs
    ``weights``), a JSON config, or a teacher directory. ``options`` override TeacherConfig fields
    (e.g. ``input_size=(224, 416)``, ``tile=(224, 416)``, ``key_smoothing=0.9``).
    """
    clip = load_open_clip(model, weights, device=device, random_init=random_init)
    stored = {k: v for k, v in clip.teacher_cfg.items() if k in {f.name for f in fields(TeacherConfig)}}
    stored.update(options)
    return Teacher(clip, TeacherConfig.from_dict(stored), device, text_cache)


def bound_tokenizer_cache(tokenizer: Any, max_entries: int | None = None) -> None:
    """Start a tokenizer's word cache over once it holds more than ``max_entries`` words.

    The special tokens stay: they are the entries that map to themselves (a word's BPE ends in
    ``</w>``), and the tokenizer relies on finding them there.
    """
    cache = getattr(tokenizer, "cache", None)
    limit = TOKENIZER_CACHE_ENTRIES if max_entries is None else max_entries
    if isinstance(cache, dict) and len(cache) > limit:
        tokenizer.cache = {k: v for k, v in cache.items() if k == v}
