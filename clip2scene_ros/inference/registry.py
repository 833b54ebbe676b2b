"""The inference choices every entry point offers: backends and precisions, named once.

Kept free of heavy imports (no torch, no onnxruntime) so argument parsers, the node's parameter
validation and the segmenter configuration can all read it cheaply.
"""

from __future__ import annotations

# torch: eager model; onnxruntime: the exported graph; tensorrt: an engine built from that graph
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
# auto: bf16 on CPUs with native bf16 for checkpoints measured safe, fp16 for TensorRT, else fp32
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
DEVICE_PREFIXES: tuple[str, ...] = ("cpu", "cuda")  # cpu | cuda | cuda:N


def device_error(device: str) -> str | None:
    if device.startswith(DEVICE_PREFIXES):
        return None
    return f"device='{device}' must be cpu, cuda or cuda:N"
