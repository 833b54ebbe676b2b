"""3D student networks: MinkUNet on the sparse engine, configs as JSON data, safetensors checkpoints."""

from .minkunet import ExportModule, MinkUNet, ModelConfig, feature_column
from .registry import create_model, list_models, load_checkpoint, load_config, save_checkpoint

__all__ = [
    "ExportModule",
    "MinkUNet",
    "ModelConfig",
    "create_model",
    "feature_column",
    "list_models",
    "load_checkpoint",
    "load_config",
    "save_checkpoint",
]
