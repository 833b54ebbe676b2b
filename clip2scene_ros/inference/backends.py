"""Inference backends behind one call: ``backend(points [P, 3+F]) -> {head: float32 [P, D]}``.

A :class:`VocabularyHead` (the zero-shot classifier: text embeddings as the weights of a last
linear layer) can run as part of the forward; the torch backend computes it on the model's device,
so on a GPU only labels and scores would need to leave it.

* ``torch``: the eager engine (BatchNorm folded), fp32, bf16 (CPU, fp32 accumulation) or fp16 (CUDA).
* ``onnxruntime``: the exported ONNX graph on ONNX Runtime (CPU, or CUDA where installed).
* ``tensorrt``: an engine built from the same ONNX (see :mod:`.tensorrt`); needs CUDA + TensorRT.

All three voxelize and build the kernel maps the same way, outside the network.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clip2scene_ros.models import MinkUNet, ModelConfig, load_checkpoint  # noqa: F401
from clip2scene_ros.models.inputs import PreparedInputs, gather_points, prepare_graph_inputs, prepare_inputs
from clip2scene_ros.sparse import native

from .cpu import CoreBudget, CpuInfo, resolve_precision
from .export import export_onnx, file_sha256, read_sidecar
from .registry import BACKENDS, PRECISIONS

LOG = logging.getLogger(__name__)
KINDS = BACKENDS
# model.json "extra" key: share of real-scan labels bf16 keeps equal to fp32 (measured; >= 0.995 lets
# precision "auto" pick bf16 on CPUs with native bf16)
BF16_AGREEMENT_KEY = "bf16_label_agreement"
BF16_MIN_AGREEMENT = 0.995
ONNX_FILE = "model.onnx"
# extra per-voxel outputs when a VocabularyHead runs with the forward
CLASS_INDEX = "class_index"  # int64 [N]: argmax over the vocabulary
CLASS_COSINE = "class_cosine"  # float32 [N]: cosine similarity to that class
INV_NORM = "inv_norm"  # float32 [N]: 1 / |head feature| (queries reuse it)


@dataclass(frozen=True)
class VocabularyHead:
    """Zero-shot classifier over one head: class = argmax of cosine(feature, text embedding)."""

    head: str
    text_t: np.ndarray  # float32 [D, C], unit-length columns


def classify_numpy(feats: np.ndarray, text_t: np.ndarray) -> dict[str, np.ndarray]:
    """The :class:`VocabularyHead` outputs for [N, D] features (backends without a torch graph)."""
    # The argmax ignores the positive per-row norm, so only the winner is divided by it.
    logits = feats @ text_t
    inv_norm = 1.0 / np.sqrt(np.maximum(np.einsum("ij,ij->i", feats, feats), 1e-24, dtype=np.float32))
    best = logits.argmax(axis=1)
    cos = np.take_along_axis(logits, best[:, None], axis=1)[:, 0] * inv_norm
    return {CLASS_INDEX: best, CLASS_COSINE: cos.astype(np.float32), INV_NORM: inv_norm.astype(np.float32)}


def classify_torch(feats: torch.Tensor, text_t: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`classify_numpy` in torch, on the features' device (the torch backend's vocabulary head)."""
    cos, best = (feats @ text_t).max(dim=1)
    inv_norm = torch.linalg.vector_norm(feats, dim=1).clamp_min_(1e-12).reciprocal_()
    return {CLASS_INDEX: best, CLASS_COSINE: cos.mul_(inv_norm), INV_NORM: inv_norm}


def _empty_outputs(heads: list[str], embed_dim: int, vocabulary_head: VocabularyHead | None) -> dict[str, np.ndarray]:
    out = {h: np.zeros((0, embed_dim), np.float32) for h in heads}
    if vocabulary_head is not None:
        out.update({CLASS_INDEX: np.zeros(0, np.int64), CLASS_COSINE: np.zeros(0, np.float32)})
        out[INV_NORM] = np.zeros(0, np.float32)
    return out


class Backend(ABC):
    """Common interface; ``config`` is the model's :class:`ModelConfig`."""

    kind: str = ""
    # [min, max] level-0 voxels an engine accepts (TensorRT optimisation profile); None = any
    voxel_limits: tuple[int, int] | None = None

    def __init__(self, config: ModelConfig, precision: str, device: str) -> None:
        self.config = config
        self.precision = precision
        self.device = device
        self.heads = list(config.heads)
        self.embed_dim = config.embed_dim

    def __call__(self, points: np.ndarray) -> dict[str, np.ndarray]:
        outputs, point_rows = self.voxel_outputs(points)
        return gather_points(outputs, point_rows, self.embed_dim)

    def voxel_outputs(
        self, points: np.ndarray, vocabulary_head: VocabularyHead | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per-voxel outputs ``{head: [N, D]}`` and each point's voxel row (-1 = dropped point).

        Points of one voxel share its features, so per-voxel work (classification, queries) costs
        N instead of P rows; ``__call__`` gathers them to points. With ``vocabulary_head`` the
        outputs also hold ``CLASS_INDEX``, ``CLASS_COSINE`` and ``INV_NORM`` per voxel.
        """
        points = np.asarray(points)
        if points.ndim != 2:
            raise ValueError(f"points must be a 2-D array [P, 3+F], got shape {points.shape}")
        if vocabulary_head is not None:
            if vocabulary_head.head not in self.heads:
                raise ValueError(f"model has no head '{vocabulary_head.head}'; its heads are: {', '.join(self.heads)}")
            if vocabulary_head.text_t.shape[0] != self.embed_dim:
                raise ValueError(
                    f"head '{vocabulary_head.head}' gives {self.embed_dim}-d features but the text encoder gives "
                    f"{vocabulary_head.text_t.shape[0]}-d embeddings: the checkpoint and the teacher do not belong "
                    "together"
                )
        prepared = self.prepare(points)
        if prepared.num_voxels == 0:
            return _empty_outputs(self.heads, self.embed_dim, vocabulary_head), np.full(len(points), -1, np.int64)
        point_rows = prepared.point_rows
        if self.voxel_limits is not None and not self.voxel_limits[0] <= prepared.num_voxels <= self.voxel_limits[1]:
            prepared, point_rows = fit_voxel_profile(self.config, points, prepared, self.voxel_limits)
        out = self.run_voxels(prepared, vocabulary_head)
        if vocabulary_head is not None and CLASS_INDEX not in out:
            out.update(classify_numpy(out[vocabulary_head.head], vocabulary_head.text_t))
        return out, point_rows

    def prepare(self, points: np.ndarray) -> PreparedInputs:
        """Voxels and maps in the form this backend runs: the exported graph's padded inputs
        (ONNX Runtime, TensorRT); the torch backend overrides it."""
        return prepare_graph_inputs(self.config, points)

    @abstractmethod
    def run_voxels(
        self, prepared: PreparedInputs, vocabulary_head: VocabularyHead | None = None
    ) -> dict[str, np.ndarray]:
        """Voxelized input with kernel maps (:func:`clip2scene_ros.models.inputs.prepare_inputs`) -> per-voxel outputs.

        A backend may compute the ``vocabulary_head`` outputs itself; otherwise they are computed
        from the head features with :func:`classify_numpy`.
        """


def fit_voxel_profile(
    config: ModelConfig, points: np.ndarray, prepared: PreparedInputs, limits: tuple[int, int]
) -> tuple[PreparedInputs, np.ndarray]:
    """Re-prepare a cloud whose voxel count is outside ``limits`` so the frame is not lost.

    Too many voxels: a random (seeded by the count, so repeatable) subset of ``max`` voxels is kept;
    the other voxels' points get row -1 (unlabelled). Too few: isolated padding voxels are added far
    from the cloud (beyond the network's receptive field); their rows are simply never gathered.
    Returns the new inputs and the voxel row of every input point.
    """
    lo, hi = limits
    n = prepared.num_voxels
    if n > hi and config.arch == "spvcnn":  # its rows are points, not voxels: no voxel subset to pick
        raise ValueError(f"{n} voxels is above the engine's profile maximum {hi}; rebuild with a wider profile")
    if n > hi:
        keep_rows = np.random.default_rng(n).choice(n, hi, replace=False)
        kept = np.zeros(n, bool)
        kept[keep_rows] = True
        keep = (prepared.point_rows >= 0) & kept[np.maximum(prepared.point_rows, 0)]
        sub = prepare_inputs(config, points[keep])
        rows = np.full(len(points), -1, np.int64)
        rows[keep] = sub.point_rows
        return sub, rows
    v = config.voxel_size
    xyz = points[prepared.point_rows >= 0, :3]
    far_y = float(xyz[:, 1].max()) + 512 * v  # 512 voxels: beyond the receptive field of every level
    pad = np.zeros((lo - n, points.shape[1]), np.float32)
    pad[:, 0] = float(xyz[:, 0].min()) + (np.arange(lo - n) * 3 + 0.5) * v  # 3 voxels apart: no neighbours
    pad[:, 1] = far_y
    pad[:, 2] = float(xyz[:, 2].min()) + 0.5 * v
    padded = prepare_inputs(config, np.concatenate([np.asarray(points, np.float32), pad]))
    return padded, padded.point_rows[: len(points)]


class TorchBackend(Backend):
    kind = "torch"

    def __init__(self, model: MinkUNet, device: str = "cpu", precision: str = "fp32") -> None:
        precision = choose_precision(precision, self.kind, device)
        super().__init__(model.config, precision, device)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if precision == "fp16" and not str(device).startswith("cuda"):
            raise ValueError("fp16 needs a CUDA device; on CPU use precision='bf16' (fp32 accumulation)")
        self.dtype = dtype
        self.model = model.fold_bn().to(device=device, dtype=dtype).eval()
        # fp32 MinkUNet on CPU: fused kernels over neighbour tables where g++ could build them
        self.fused = (
            dtype == torch.float32 and str(device) == "cpu" and model.config.arch == "minkunet" and native.available()
        )
        self._text_t: tuple[np.ndarray, torch.Tensor] | None = None  # (the numpy vocabulary, its tensor)
        self.core_budget = CoreBudget()
        self._folded: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def prepare(self, points: np.ndarray) -> PreparedInputs:
        return prepare_inputs(self.config, points, table_maps=self.fused)

    def voxel_outputs(
        self, points: np.ndarray, vocabulary_head: VocabularyHead | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if not self.fused:
            return super().voxel_outputs(points, vocabulary_head)
        # torch's intra-op threads go to the fused kernels' barrier-free sharing for the frame,
        # as many as other processes leave cores idle
        with native.kernel_threads(self.core_budget.threads(torch.get_num_threads())):
            return super().voxel_outputs(points, vocabulary_head)

    @torch.no_grad()
    def run_voxels(
        self, prepared: PreparedInputs, vocabulary_head: VocabularyHead | None = None
    ) -> dict[str, np.ndarray]:
        # the eager path uses the exact (unpadded) maps: cost follows the real neighbour count
        feats = prepared.feats.to(self.device, self.dtype)
        maps = prepared.maps if str(self.device) == "cpu" else prepared.maps.to(self.device)
        if vocabulary_head is not None and self.fused:  # fused = fp32 MinkUNet on CPU
            # the vocabulary folded into the head: one matmul gives the head's features and the
            # class logits (only that head runs; the others are not returned)
            w, b = self._folded_head(vocabulary_head)
            y = torch.addmm(b, self.model.trunk(feats, maps), w)
            d = self.embed_dim
            head = y[:, :d]
            cos, best = y[:, d:].max(dim=1)
            inv_norm = torch.linalg.vector_norm(head, dim=1).clamp_min_(1e-12).reciprocal_()
            out = {vocabulary_head.head: head, CLASS_INDEX: best, CLASS_COSINE: cos.mul_(inv_norm), INV_NORM: inv_norm}
            return {k: v.numpy() for k, v in out.items()}
        out = {h: v.float() for h, v in self.model(feats, maps).items()}
        result = {}
        if vocabulary_head is not None:
            result = classify_torch(out[vocabulary_head.head], self._text_tensor(vocabulary_head.text_t))
        return {k: v.cpu().numpy() for k, v in {**out, **result}.items()}

    def _text_tensor(self, text_t: np.ndarray) -> torch.Tensor:
        """The vocabulary on the model's device, converted once per vocabulary (not per frame)."""
        if self._text_t is None or self._text_t[0] is not text_t:
            self._text_t = (text_t, torch.from_numpy(np.ascontiguousarray(text_t, np.float32)).to(self.device))
        return self._text_t[1]

    def _folded_head(self, vocabulary_head: VocabularyHead) -> tuple[torch.Tensor, torch.Tensor]:
        """``[W^T | W^T T]`` [C_last, D + classes] and ``[b | b T]`` of the head and the vocabulary T
        (built once per vocabulary): the features and the logits of one matmul."""
        key = (vocabulary_head.head, vocabulary_head.text_t)
        if self._folded is None or self._folded[0][0] != key[0] or self._folded[0][1] is not key[1]:
            lin = self.model.heads[vocabulary_head.head]
            t = self._text_tensor(vocabulary_head.text_t)
            w = lin.weight.detach().T
            b = lin.bias.detach() if lin.bias is not None else w.new_zeros(w.shape[1])
            self._folded = (key, (torch.cat([w, w @ t], 1).contiguous(), torch.cat([b, b @ t])))
        return self._folded[1]


def ensure_onnx(checkpoint_dir: str | Path, onnx_path: str | Path | None = None) -> Path:
    """The checkpoint's ONNX export, (re-)exported when missing or older than the weights."""
    checkpoint_dir = Path(checkpoint_dir)
    path = Path(onnx_path) if onnx_path is not None else checkpoint_dir / ONNX_FILE
    weights = checkpoint_dir / "model.safetensors"
    if path.is_file() and Path(str(path) + ".json").is_file():
        if not weights.is_file() or path.stat().st_mtime >= weights.stat().st_mtime:
            return path
    model, _, _ = load_checkpoint(checkpoint_dir)
    LOG.info("exporting %s to ONNX (%s); this takes a minute once", checkpoint_dir, path)
    return export_onnx(model, path)


def session_options(threads: int | None = None):  # noqa: ANN201 - onnxruntime.SessionOptions
    """ONNX Runtime options for this graph on a small CPU: every core (or ``threads``) inside one
    operator, operators one after another (the graph is a chain), full graph optimisation, and no
    spin-waiting between operators, so the cores stay free for the DDS and node threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads if threads else (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"

    def __init__(
        self, onnx_path: str | Path, device: str = "cpu", precision: str = "fp32", threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        meta = read_sidecar(onnx_path)
        super().__init__(ModelConfig.from_dict(meta["config"]), precision, device)
        if precision != "fp32":
            raise ValueError(
                f"the onnxruntime backend runs the fp32 graph; precision={precision!r} is available with "
                "kind='torch' (bf16 on CPU) or kind='tensorrt' (fp16)"
            )
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("device='cuda' needs onnxruntime-gpu (CUDAExecutionProvider is not available)")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(onnx_path), session_options(threads), providers=providers)
        self.output_names = meta["outputs"]

    def run_voxels(
        self, prepared: PreparedInputs, vocabulary_head: VocabularyHead | None = None
    ) -> dict[str, np.ndarray]:
        out = self.session.run(self.output_names, prepared.feeds())
        return dict(zip(self.output_names, out))


def choose_precision(
    precision: str, kind: str, device: str, extra: dict | None = None, cpu: CpuInfo | None = None
) -> str:
    """Resolve ``precision`` for a checkpoint (``extra`` = its model.json extra) on this machine.

    ``auto`` picks bf16 only on a CPU with native bf16 and only for a checkpoint whose recorded
    :data:`BF16_AGREEMENT_KEY` is >= :data:`BF16_MIN_AGREEMENT`; otherwise fp32 (fp16 for TensorRT).
    """
    if precision == "auto" and kind == "torch":
        agreement = (extra or {}).get(BF16_AGREEMENT_KEY)
        if agreement is None or float(agreement) < BF16_MIN_AGREEMENT:
            return "fp32"
    return resolve_precision(precision, kind, device, cpu)


def create_backend(
    kind: str,
    checkpoint_dir: str | Path,
    device: str = "cpu",
    precision: str = "fp32",
    **options,
) -> Backend:
    """Build a backend from a checkpoint directory (``model.safetensors`` + ``model.json``).

    options: ``onnx_path`` (onnxruntime/tensorrt; default ``<checkpoint>/model.onnx``, exported on
    first use), ``threads`` (onnxruntime), ``tensorrt`` (:class:`.tensorrt.TensorRTOptions`),
    ``cpu`` (a :class:`.cpu.CpuInfo` replacing this machine's, for ``precision="auto"``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown backend {kind!r}; choose one of {KINDS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if kind == "torch":
        model, _, extra = load_checkpoint(checkpoint_dir)
        precision = choose_precision(precision, kind, device, extra, options.get("cpu"))
        return TorchBackend(model, device=device, precision=precision)
    precision = choose_precision(precision, kind, device, {}, options.get("cpu"))
    onnx_path = ensure_onnx(checkpoint_dir, options.get("onnx_path"))
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, device=device, precision=precision, threads=options.get("threads"))
    from .tensorrt import TensorRTBackend, TensorRTOptions

    trt_options = options.get("tensorrt") or TensorRTOptions(fp16=precision == "fp16")
    if precision == "bf16":
        raise ValueError("the tensorrt backend supports precision 'fp32' or 'fp16'")
    return TensorRTBackend(onnx_path, trt_options, device=device)


__all__ = [
    "CLASS_COSINE",
    "CLASS_INDEX",
    "INV_NORM",
    "KINDS",
    "Backend",
    "OnnxRuntimeBackend",
    "TorchBackend",
    "VocabularyHead",
    "choose_precision",
    "classify_numpy",
    "classify_torch",
    "create_backend",
    "ensure_onnx",
    "file_sha256",
    "session_options",
]
