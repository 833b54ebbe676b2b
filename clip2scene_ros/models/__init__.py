"""3D student networks: MinkUNet and SPVCNN on the sparse engine, configs as JSON data, safetensors
checkpoints, the import of torchsparse (SpVNAS/CLIP2Scene) weights, and the input contract
(:mod:`.inputs`: how a model reads a cloud and how its outputs come back per point)."""

from .convert import (
    convert_torchsparse_checkpoint,
    export_torchsparse,
    export_torchsparse_minkunet,
    import_torchsparse,
    import_torchsparse_minkunet,
    load_torchsparse_state,
)
from .inputs import InputSpec, PreparedInputs, encode_points, prepare_inputs
from .minkunet import ExportModule, MinkUNet, ModelConfig, feature_column
from .registry import create_model, list_models, load_checkpoint, load_config, save_checkpoint
from .spvcnn import SPVCNN, PointVoxelMaps

__all__ = [
    "SPVCNN",
    "ExportModule",
    "InputSpec",
    "PreparedInputs",
    "encode_points",
    "prepare_inputs",
    "MinkUNet",
    "ModelConfig",
    "PointVoxelMaps",
    "convert_torchsparse_checkpoint",
    "create_model",
    "export_torchsparse",
    "export_torchsparse_minkunet",
    "import_torchsparse",
    "import_torchsparse_minkunet",
    "load_torchsparse_state",
    "feature_column",
    "list_models",
    "load_checkpoint",
    "load_config",
    "save_checkpoint",
]
