"""3D student networks: MinkUNet on the sparse engine, configs as JSON data, safetensors checkpoints."""

from .convert import export_torchsparse_minkunet, import_torchsparse_minkunet
from .minkunet import ExportModule, MinkUNet, ModelConfig, feature_column
from .registry import create_model, list_models, load_checkpoint, load_config, save_checkpoint

__all__ = [
    "ExportModule",
    "MinkUNet",
    "ModelConfig",
    "create_model",
    "export_torchsparse_minkunet",
    "import_torchsparse_minkunet",
    "feature_column",
    "list_models",
    "load_checkpoint",
    "load_config",
    "save_checkpoint",
]
