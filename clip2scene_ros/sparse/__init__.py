"""Sparse 3D engine: voxelization, kernel maps built with torch ops, gather + matmul convolutions.

Runs eagerly on CPU or CUDA and traces to plain ONNX operators (Gather, MatMul, Slice, Concat,
Add, Relu, ...) that ONNX Runtime and TensorRT execute, with the kernel maps as graph inputs.
"""

from .convert import from_spconv, from_spconv1, from_torchsparse, to_spconv, to_torchsparse
from .kmap import (
    DownMap,
    KernelMaps,
    PaddedMaps,
    SubmMap,
    build_kernel_maps,
    kernel_offsets,
    padded_input_names,
    padded_tensors,
    padded_tensors_from_tables,
)
from .ops import DownConv3d, SubmConv3d, UpConv3d, down_conv, subm_conv, up_conv
from .voxelize import COORD_LIMIT, MAX_BATCH, Voxels, pack_keys, unpack_keys, voxelize

__all__ = [
    "COORD_LIMIT",
    "MAX_BATCH",
    "DownConv3d",
    "DownMap",
    "KernelMaps",
    "PaddedMaps",
    "SubmConv3d",
    "SubmMap",
    "UpConv3d",
    "Voxels",
    "build_kernel_maps",
    "down_conv",
    "from_spconv",
    "from_spconv1",
    "from_torchsparse",
    "kernel_offsets",
    "pack_keys",
    "padded_input_names",
    "padded_tensors",
    "padded_tensors_from_tables",
    "subm_conv",
    "to_spconv",
    "to_torchsparse",
    "unpack_keys",
    "up_conv",
    "voxelize",
]
