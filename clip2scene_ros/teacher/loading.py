"""Offline open_clip loading: architecture by name + a local weights file, or a JSON model config.

Nothing here ever reaches the network: no ``pretrained`` tags, no Hugging Face hub. Weights come
from a local ``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` file (``torch.load`` only with
``weights_only=True``) or from a directory in open_clip's ``local-dir`` layout
(``open_clip_config.json`` + ``model.safetensors``), which is how our own tiny teacher ships.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "teacher"
CONFIG_FILENAME = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Names meaning "the tiny teacher trained on the synthetic world that ships with the package".
DEFAULT_NAMES = ("default", "tiny", "synthetic")

_WEIGHTS_HELP = (
    "No weights are downloaded by clip2scene_ros. On a machine with internet, fetch the open_clip "
    "checkpoint once, e.g. for ViT-B/16:\n"
    "  python -c \"import open_clip; open_clip.create_model('ViT-B-16', pretrained='openai', "
    "cache_dir='clip_weights')\"\n"
    "  (or download open_clip_pytorch_model.bin from the Hugging Face repo "
    "timm/vit_base_patch16_clip_224.openai)\n"
    "copy the .bin/.safetensors file to the robot and pass it as weights=<file> "
    "(CLI: --teacher-weights <file>). Or use the bundled tiny teacher: model='default'."
)


class TeacherLoadError(RuntimeError):
    """The teacher model cannot be built or its weights cannot be read (message names the fix)."""


@dataclass
class LoadedClip:
    """An open_clip model on CPU/GPU with what the teacher needs around it."""

    model: torch.nn.Module
    tokenizer: Any
    name: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    weights_path: Path | None
    teacher_cfg: dict[str, Any] = field(default_factory=dict)  # defaults stored with our assets
    _model_id: str | None = None

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.preprocess_cfg.get("mean", OPENAI_MEAN))

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.preprocess_cfg.get("std", OPENAI_STD))

    def model_id(self) -> str:
        """Content hash of the weights (and architecture): keys every cache."""
        if self._model_id is None:
            h = hashlib.sha256(json.dumps(self.model_cfg, sort_keys=True).encode())
            for key, tensor in sorted(self.model.state_dict().items()):
                h.update(key.encode())
                h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
            self._model_id = f"{self.name}-{h.hexdigest()[:16]}"
        return self._model_id

    def reset_model_id(self) -> None:
        """Call after changing weights in place (training) so caches are invalidated."""
        self._model_id = None


OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def list_model_configs() -> list[str]:
    """Names of the JSON model configs shipped with the teacher (tiny models trained here)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TeacherLoadError(f"cannot read open_clip config {path}: {exc}") from exc


def _split_config(raw: dict[str, Any], source: str) -> tuple[dict, dict, dict]:
    """Accept both open_clip's ``{"model_cfg", "preprocess_cfg"}`` files and bare model configs."""
    model_cfg = raw.get("model_cfg", raw)
    if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(model_cfg):
        raise TeacherLoadError(
            f"{source} is not an open_clip model config: it needs 'embed_dim', 'vision_cfg' and "
            "'text_cfg' (see clip2scene_ros/teacher/model_configs/*.json for examples)"
        )
    return copy.deepcopy(model_cfg), dict(raw.get("preprocess_cfg", {})), dict(raw.get("clip2scene", {}))


def _find_weights(directory: Path) -> Path | None:
    preferred = ["model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for name in preferred:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return found[0] if found else None


def resolve_model(model: str | os.PathLike) -> tuple[str, dict, dict, dict, Path | None]:
    """Turn a model spec into (name, model_cfg, preprocess_cfg, teacher_cfg, weights in a dir).

    Accepted specs: ``"default"`` (bundled tiny teacher), a directory in local-dir layout, a JSON
    config file, the name of a config in ``teacher/model_configs``, or an open_clip architecture
    name such as ``"ViT-B-16"`` / ``"ViT-B/16"`` / ``"RN50"``.
    """
    spec = str(model)
    if spec in DEFAULT_NAMES:
        if not (ASSET_DIR / CONFIG_FILENAME).is_file():
            raise TeacherLoadError(
                f"the bundled tiny teacher is missing from {ASSET_DIR}; train it with "
                "`clip2scene train teacher` or reinstall clip2scene_ros"
            )
        spec = str(ASSET_DIR)
    path = Path(spec).expanduser()
    if path.is_dir():
        cfg_path = path / CONFIG_FILENAME
        if not cfg_path.is_file():
            raise TeacherLoadError(
                f"{path} is a directory but has no {CONFIG_FILENAME}; a teacher directory holds "
                f"{CONFIG_FILENAME} (open_clip local-dir layout) and model.safetensors"
            )
        model_cfg, pre, tcfg = _split_config(_read_json(cfg_path), str(cfg_path))
        return path.name, model_cfg, pre, tcfg, _find_weights(path)
    if spec.endswith(".json"):
        if not path.is_file():
            raise TeacherLoadError(f"open_clip model config {path} does not exist")
        model_cfg, pre, tcfg = _split_config(_read_json(path), str(path))
        return path.stem, model_cfg, pre, tcfg, None
    if (CONFIG_DIR / f"{spec}.json").is_file():
        model_cfg, pre, tcfg = _split_config(_read_json(CONFIG_DIR / f"{spec}.json"), spec)
        return spec, model_cfg, pre, tcfg, None
    import open_clip

    arch = spec.replace("/", "-")
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise TeacherLoadError(
            f"unknown teacher model '{spec}': not a directory, JSON config, bundled config "
            f"({', '.join(list_model_configs()) or 'none'}) or open_clip architecture. "
            "open_clip architectures: open_clip.list_models(), e.g. ViT-B-16, ViT-L-14, RN50"
        )
    return arch, copy.deepcopy(model_cfg), {}, {}, None


def _build(model_cfg: dict[str, Any]) -> torch.nn.Module:
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(model_cfg)
    text_cfg, vision_cfg = cfg["text_cfg"], cfg["vision_cfg"]
    # Base-tower weights from timm / Hugging Face would be downloads: always off.
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False
    hf_text = "hf_model_name" in text_cfg
    if hf_text:
        text_cfg["hf_model_pretrained"] = False
    custom_text = cfg.pop("custom_text", False) or hf_text
    cls = CoCa if "multimodal_cfg" in cfg else (CustomTextCLIP if custom_text else CLIP)
    try:
        return cls(**cfg)
    except Exception as exc:  # e.g. a Hugging Face text tower that is not in the local HF cache
        raise TeacherLoadError(f"cannot build open_clip model from config: {exc}") from exc


def _tokenizer(model_cfg: dict[str, Any]):
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    text_cfg = model_cfg["text_cfg"]
    context_length = int(text_cfg.get("context_length", 77))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if not hf_name:
        return SimpleTokenizer(context_length=context_length)  # BPE vocab ships inside open_clip
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # only the local Hugging Face cache may be used
    try:
        return HFTokenizer(hf_name, context_length=context_length, **text_cfg.get("tokenizer_kwargs", {}))
    except Exception as exc:
        raise TeacherLoadError(
            f"tokenizer '{hf_name}' is not in the local Hugging Face cache and nothing is downloaded; "
            "copy the tokenizer files into ~/.cache/huggingface on this machine"
        ) from exc


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint without executing pickled code (``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TeacherLoadError(
            f"cannot read {path} with torch.load(weights_only=True): {exc}. clip2scene only reads "
            "plain state dicts (.bin/.pt/.pth) or .safetensors; convert a TorchScript/pickled "
            "checkpoint on a trusted machine with open_clip.create_model(...) then "
            "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
        ) from exc
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        raise TeacherLoadError(f"{path} does not hold a state dict (found {type(ckpt).__name__})")
    if ckpt and next(iter(ckpt)).startswith("module."):
        ckpt = {k[len("module.") :]: v for k, v in ckpt.items()}
    return ckpt


def load_weights(model: torch.nn.Module, path: Path) -> None:
    from open_clip.factory import convert_state_dict, resize_pos_embed, resize_text_pos_embed

    state = load_state_dict(path)
    state = convert_state_dict(model, state)
    ref = model.state_dict()
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in ref and state[key].shape != ref[key].shape:
            state[key] = state[key].reshape(ref[key].shape)
    state = {k: v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v for k, v in state.items()}
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TeacherLoadError(
            f"weights {path} do not match the architecture: {str(exc)[:600]}. Pass the model name "
            "the checkpoint was trained with (e.g. ViT-B-16 for OpenAI ViT-B/16 weights)"
        ) from exc


def load_open_clip(
    model: str | os.PathLike = "default",
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    random_init: bool = False,
) -> LoadedClip:
    """Build an open_clip model offline and load local weights into it.

    ``random_init=True`` allows an architecture without weights (tests, training from scratch);
    otherwise a missing weights file is an error that explains how to supply one.
    """
    name, model_cfg, preprocess_cfg, teacher_cfg, dir_weights = resolve_model(model)
    weights_path = Path(weights).expanduser() if weights is not None else dir_weights
    if weights_path is not None and not weights_path.is_file():
        raise TeacherLoadError(f"teacher weights file {weights_path} does not exist.\n{_WEIGHTS_HELP}")
    if weights_path is not None and weights_path.suffix not in WEIGHT_SUFFIXES:
        raise TeacherLoadError(
            f"teacher weights {weights_path}: unsupported file type; use one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    if weights_path is None and not random_init:
        raise TeacherLoadError(f"teacher model '{model}' has no weights file.\n{_WEIGHTS_HELP}")

    from open_clip.model import set_model_preprocess_cfg

    clip = _build(model_cfg)
    pre = {"size": model_cfg["vision_cfg"].get("image_size", 224), "mean": OPENAI_MEAN, "std": OPENAI_STD}
    pre.update(preprocess_cfg)
    set_model_preprocess_cfg(clip, pre)
    if weights_path is not None:
        load_weights(clip, weights_path)
    clip.eval().to(device)
    return LoadedClip(clip, _tokenizer(model_cfg), name, model_cfg, pre, weights_path, teacher_cfg)
