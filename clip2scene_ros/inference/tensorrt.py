"""TensorRT engines from the exported ONNX graph (guarded: needs a CUDA GPU and TensorRT).

* Optimization profile [min, opt, max] from :class:`TensorRTOptions` (voxels at level 0; the
  coarser levels, padded pair lists and neighbour tables are derived from it).
* Engine cache keyed by the ONNX file's sha256, the TensorRT version, the GPU name, precision and
  profile: ``<cache_dir>/<stem>-<key>.engine`` plus a JSON sidecar; a matching engine is reused.
* ``build_only``: build (or find) the engine and stop, as a deployment step.

Where no CUDA device or no ``tensorrt`` package exists, :func:`tensorrt_status` says why and the
backend raises :class:`TensorRTUnavailable` with that reason.
NOTE: written against the TensorRT 10 Python API; not executed on the CPU-only development
machines (the CPU paths are the tested ones).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip2scene_ros.models import ModelConfig
from clip2scene_ros.models.spvcnn import POINT_LEVELS
from clip2scene_ros.sparse.kmap import OFFSET_GROUPS, ROW_BUCKETS

from .backends import Backend
from .export import file_sha256, read_sidecar

LOG = logging.getLogger(__name__)


class TensorRTUnavailable(RuntimeError):
    """No CUDA GPU or no TensorRT installation: use the torch or onnxruntime backend."""


@dataclass
class TensorRTOptions:
    fp16: bool = True
    min_voxels: int = 1000
    opt_voxels: int = 30000
    max_voxels: int = 120000
    max_pairs_per_voxel: int = 8  # submanifold pairs (centre excluded) per voxel, upper bound
    workspace_mb: int = 2048
    cache_dir: str | None = None  # default: next to the ONNX file
    build_only: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min_voxels <= self.opt_voxels <= self.max_voxels:
            raise ValueError(
                f"TensorRT profile needs 1 <= min_voxels <= opt_voxels <= max_voxels, got "
                f"[{self.min_voxels}, {self.opt_voxels}, {self.max_voxels}]"
            )

    @classmethod
    def from_dict(cls, d: dict) -> TensorRTOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown tensorrt options {unknown}; valid: {sorted(names)}")
        return cls(**d)


def tensorrt_status() -> tuple[bool, str]:
    """(available, reason): whether an engine can be built and run here."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA device is available (torch.cuda.is_available() is False)"
    except Exception as e:  # noqa: BLE001
        return False, f"torch cannot query CUDA: {e}"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the TensorRT Python package is not installed (pip install tensorrt)"
    return True, "ok"


def profile_shapes(config: ModelConfig, options: TensorRTOptions, num_levels: int = 5) -> dict:
    """Per-input ``(min, opt, max)`` dims of the exported graph (all sizes are ordinary dims)."""
    c_in = len(config.in_features)
    mn, op, mx = options.min_voxels, options.opt_voxels, options.max_voxels
    k = options.max_pairs_per_voxel
    dims: dict[str, tuple] = {"feats": ((mn, c_in), (op, c_in), (mx, c_in))}
    # coarse levels hold ~1/3 of the voxels of the level below on LiDAR scans
    level = [(1 if s else mn, max(1, op // 3**s), mx) for s in range(num_levels)]
    for s in range(num_levels):
        n = level[s]
        # offset groups (26 offsets split in OFFSET_GROUPS) and row buckets (rows split in
        # ROW_BUCKETS): each may be empty on small levels, so every minimum is 0
        for g in range(OFFSET_GROUPS):
            dims[f"subm{s}_pidx{g}"] = ((0, 1), (8, max(1, n[1] // 4)), (26, n[2]))
            dims[f"subm{s}_poff{g}"] = ((0,), (8,), (26,))
        for b in range(ROW_BUCKETS):
            dims[f"subm{s}_ptable{b}"] = ((1, 0), (4, max(1, n[1] // ROW_BUCKETS)), (k * 3, n[2]))
    for s in range(num_levels - 1):
        n = level[s]
        q = (1, max(1, n[1] // 4), n[2])
        dims[f"down{s}_fine"] = dims[f"down{s}_parent"] = tuple((8, v) for v in q)
        dims[f"down{s}_child"] = tuple((8, v) for v in level[s + 1])
        dims[f"down{s}_inv"] = tuple((v,) for v in n)
    if config.arch == "spvcnn":
        # LiDAR scans hold 1-3 points per level-0 voxel on average and a few dozen at most
        points = (mn, 2 * op, 4 * mx)
        dims["point_members"] = tuple((v, j) for v, j in zip(level[0], (1, 8, 64)))
        for s in POINT_LEVELS:
            dims[f"point{s}_inv_count"] = tuple((v, 1) for v in level[s])
            dims[f"point{s}_corners"] = dims[f"point{s}_weights"] = tuple((v, 8) for v in points)
    return {"dims": dims, "values": {}}


def engine_key(onnx_path: str | Path, options: TensorRTOptions) -> str:
    import tensorrt as trt
    import torch

    parts = {
        "onnx": file_sha256(onnx_path),
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "fp16": options.fp16,
        "profile": [options.min_voxels, options.opt_voxels, options.max_voxels, options.max_pairs_per_voxel],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def build_engine(onnx_path: str | Path, options: TensorRTOptions) -> Path:
    """Build (or reuse from the cache) the engine for ``onnx_path``; returns the engine path."""
    ok, reason = tensorrt_status()
    if not ok:
        raise TensorRTUnavailable(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt
    import torch

    onnx_path = Path(onnx_path)
    meta = read_sidecar(onnx_path)
    cache = Path(options.cache_dir) if options.cache_dir else onnx_path.parent
    cache.mkdir(parents=True, exist_ok=True)
    key = engine_key(onnx_path, options)
    engine_path = cache / f"{onnx_path.stem}-{key}.engine"
    if engine_path.is_file():
        LOG.info("reusing TensorRT engine %s", engine_path)
        return engine_path
    LOG.warning("building a TensorRT engine from %s (this can take minutes) ...", onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    shapes = profile_shapes(ModelConfig.from_dict(meta["config"]), options)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        name = tensor.name
        profile.set_shape(name, *shapes["dims"][name])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path.write_bytes(bytes(serialized))
    sidecar = {
        "onnx": str(onnx_path),
        "key": key,
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "options": dataclasses.asdict(options),
    }
    Path(str(engine_path) + ".json").write_text(json.dumps(sidecar, indent=2))
    return engine_path


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(self, onnx_path: str | Path, options: TensorRTOptions, device: str = "cuda") -> None:
        ok, reason = tensorrt_status()
        if not ok:
            raise TensorRTUnavailable(
                f"the tensorrt backend is unavailable: {reason}; use kind='torch' or 'onnxruntime' on this machine"
            )
        meta = read_sidecar(onnx_path)
        super().__init__(ModelConfig.from_dict(meta["config"]), "fp16" if options.fp16 else "fp32", device)
        import tensorrt as trt

        self.engine_path = build_engine(onnx_path, options)
        self.options = options
        self.voxel_limits = (options.min_voxels, options.max_voxels)  # the frame is fitted, not lost
        self.output_names = meta["outputs"]
        if options.build_only:
            self.engine = self.context = None
            return
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"could not load {self.engine_path}; delete it to rebuild")
        self.context = self.engine.create_execution_context()

    def run_voxels(self, prepared, vocabulary_head=None) -> dict[str, np.ndarray]:  # noqa: ANN001
        import torch

        feeds = prepared.feeds()
        if self.context is None:
            raise RuntimeError("this backend was created with build_only=True")
        n0 = feeds["feats"].shape[0]
        if not self.options.min_voxels <= n0 <= self.options.max_voxels:
            raise ValueError(
                f"{n0} voxels is outside the engine's profile [{self.options.min_voxels}, "
                f"{self.options.max_voxels}]; rebuild with a wider TensorRTOptions profile"
            )
        keep = []
        for name, arr in feeds.items():
            t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=torch.float32, device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outputs.items()}
