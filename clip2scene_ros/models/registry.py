"""Model registry (JSON configs shipped in ``models/configs``) and safetensors checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from clip2scene_ros.geometry.frames import ModelFrame

from .inputs import InputSpec
from .minkunet import MinkUNet, ModelConfig
from .spvcnn import SPVCNN

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CHECKPOINT_FORMAT = "clip2scene_ros.minkunet/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"


def list_models() -> list[str]:
    """Names of the shipped model configs (``create_model(name)`` accepts them)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_config: str | Path | dict | ModelConfig, **overrides: Any) -> ModelConfig:
    """A :class:`ModelConfig` from a shipped name, a JSON path, a dict or a config, plus overrides."""
    if isinstance(name_or_config, ModelConfig):
        d = name_or_config.to_dict()
    elif isinstance(name_or_config, dict):
        d = dict(name_or_config)
    else:
        s = str(name_or_config)
        path = Path(s)
        if s in list_models():
            path = CONFIG_DIR / f"{s}.json"
        elif not (path.suffix == ".json" and path.is_file()):
            raise ValueError(f"unknown model {s!r}: use one of {list_models()} or a path to a JSON config")
        d = json.loads(path.read_text())
    d.update(overrides)
    return ModelConfig.from_dict(d)


def create_model(name_or_config: str | Path | dict | ModelConfig, **overrides: Any) -> MinkUNet:
    """Build a MinkUNet or an SPVCNN (config ``arch``), e.g. ``create_model("minkunet18", width=0.5)``."""
    config = load_config(name_or_config, **overrides)
    return SPVCNN(config) if config.arch == "spvcnn" else MinkUNet(config)


def save_checkpoint(
    directory: str | Path, model: MinkUNet, extra: dict | None = None, input_spec: InputSpec | None = None
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` (config, input contract, extra, BN-folded flag).

    ``input_spec``: how the model reads clouds (fields, intensity scale, voxel size, frame); default:
    the config's fields and voxel size, 0..255 intensity, the frame named by ``extra["frame"]``
    (the simulator's LIDAR_TOP when absent).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    if input_spec is None:
        input_spec = InputSpec.for_model(model.config, frame=ModelFrame.from_dict((extra or {}).get("frame")))
    input_spec.check(model.config)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_dict(),
        "input": input_spec.to_dict(),
        "bn_folded": bool(model.bn_folded),
        "extra": extra or {},
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[MinkUNet, ModelConfig, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`: ``(model, config, extra)``."""
    directory = Path(directory)
    wpath, cpath = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    if not wpath.is_file() or not cpath.is_file():
        raise FileNotFoundError(
            f"{directory} is not a model checkpoint: expected {WEIGHTS_FILE} and {CONFIG_FILE} "
            "(written by clip2scene_ros.models.save_checkpoint)"
        )
    meta = json.loads(cpath.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{cpath}: unsupported checkpoint format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    config = ModelConfig.from_dict(meta["config"])
    model = create_model(config)
    if meta.get("bn_folded"):
        model.fold_bn()
    state = load_file(str(wpath))
    model.load_state_dict(state, strict=True)
    model.to(device)
    return model, config, meta.get("extra", {})
