"""Fused fp32 CPU kernels (``native.cpp``) and the neighbour pairs they read.

The eager inference path on CPU spent most of its time in many small operators (per-offset
gathers, matmuls and sums at 8-96 channels) and in building the pair lists with sorts and
searches. Here one call per layer reads input rows and updates output rows in place, offset by
offset, and the pairs come from merge walks over the sorted voxel keys (rows stay in that order).

The library is compiled once per machine with the system's ``g++`` (``-O3 -march=native``) into
``$CLIP2SCENE_CACHE_DIR/native`` (default ``~/.cache/clip2scene``), keyed by the source, compiler
and CPU flags; ``scripts/setup.sh`` builds it. Without ``g++``, or with ``CLIP2SCENE_NATIVE=0``,
:func:`available` is False and callers use the pure-torch path (the numerical reference).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .voxelize import _BIAS, AXIS_BITS, COORD_LIMIT, check_coords, pack_keys, unpack_keys

LOG = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("native.cpp")
# CLIP2SCENE_NATIVE_MARCH builds for another CPU level (e.g. haswell = AVX2 only) to check that path
MARCH = os.environ.get("CLIP2SCENE_NATIVE_MARCH", "native")
FLAGS = [f"-march={MARCH}", "-O3", "-mprefer-vector-width=512", "-std=c++17", "-shared", "-fPIC", "-pthread"]
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def cache_dir() -> Path:
    root = os.environ.get("CLIP2SCENE_CACHE_DIR", Path.home() / ".cache" / "clip2scene")
    return Path(root).expanduser() / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _library_path() -> Path:
    # keyed by what the code depends on (plain C ABI: not the compiler), so a library built at
    # set-up also serves an image that has no compiler
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), _cpu_flags().encode()):
        h.update(part)
    return cache_dir() / f"c2s_sparse_{h.hexdigest()[:16]}.so"


def build(compiler: str | None = None) -> Path:
    """Compile the kernels for this machine (no-op when the cached library exists); its path."""
    path = _library_path()
    if path.is_file():
        return path
    fallback = Path(tempfile.gettempdir()) / f"clip2scene-native-{os.getuid()}" / path.name
    if fallback.is_file():
        return fallback
    compiler = compiler or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++) found and no library built for this machine")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home (a robot's image): a per-user temporary folder
        path = fallback
        path.parent.mkdir(parents=True, exist_ok=True)
    # compile beside the target and rename: concurrent builders (test workers) never see half a file
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        res = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{compiler} failed to build {SOURCE.name}:\n{res.stderr[-2000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; None (logged once) when unavailable."""
    global _lib, _failed
    if _lib is not None or _failed is not None:
        return _lib
    if os.environ.get("CLIP2SCENE_NATIVE", "1") == "0":
        _failed = "disabled by CLIP2SCENE_NATIVE=0"
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError) as e:
        _failed = str(e)
        LOG.warning("fused CPU sparse kernels unavailable, using the torch path: %s", e)
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.c2s_pair_conv_f32.argtypes = [p, i64, p, i64, i64, p, p, p, i64, p, p, i32, p, i32]
    lib.c2s_pair_conv_f32.restype = None
    lib.c2s_subm_pairs.argtypes = [p, i64, i64, i64, p, p, p]
    lib.c2s_subm_pairs.restype = None
    lib.c2s_parent_keys.argtypes = [p, i64, i64, i64, p]
    lib.c2s_parent_keys.restype = None
    lib.c2s_down_pairs.argtypes = [p, p, i64, i64, p, p, p]
    lib.c2s_down_pairs.restype = None
    lib.c2s_pad_pairs.argtypes = [i64, i64, p, p, p, p, i64, p, p, p, p]
    lib.c2s_pad_pairs.restype = None
    f32 = ctypes.c_float
    lib.c2s_voxelize.argtypes = [p, i64, i64, f32, f32, f32, i64, i64, i64, p, p, p]
    lib.c2s_voxelize.restype = i64
    _lib = lib
    return lib


def available() -> bool:
    return load() is not None


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


_threads_override: int | None = None


def _threads() -> int:
    return max(1, _threads_override or torch.get_num_threads())


@contextmanager
def kernel_threads(n: int) -> Iterator[None]:
    """Run the fused kernels on ``n`` threads and torch's own operators on one meanwhile.

    The kernels share work through a counter (a helper that another process keeps off its core
    takes no work), while torch's OpenMP regions wait for every thread at each operator: with a
    busy second core, 2 OpenMP threads made a frame several times slower than 1.
    """
    global _threads_override
    before, before_torch = _threads_override, torch.get_num_threads()
    _threads_override = max(1, n)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        _threads_override = before
        torch.set_num_threads(before_torch)


# -- neighbour pairs ------------------------------------------------------------------------------


def _lib_or_raise() -> ctypes.CDLL:
    lib = load()
    if lib is None:
        raise RuntimeError(f"fused CPU kernels unavailable: {_failed}")
    return lib


@dataclass(eq=False)
class Pairs:
    """A layer's (output row, input row) pairs grouped by weight slice: slice ``k`` holds pairs
    ``k_ptr[k]:k_ptr[k+1]`` of ``p_out`` (ascending) and ``p_in``; ``num_rows`` output rows."""

    k_ptr: Tensor  # int64 [K + 1]
    p_out: Tensor  # int32 [M]
    p_in: Tensor  # int32 [M]
    num_rows: int

    @property
    def num_offsets(self) -> int:
        return int(self.k_ptr.shape[0]) - 1

    def to_table(self) -> Tensor:
        """Dense int64 [num_rows, K] table of input rows (-1 = none), for checks."""
        k = torch.repeat_interleave(torch.arange(self.num_offsets), self.k_ptr[1:] - self.k_ptr[:-1])
        table = torch.full((self.num_rows, self.num_offsets), -1, dtype=torch.long)
        table[self.p_out.long(), k] = self.p_in.long()
        return table


@dataclass(eq=False)
class SubmTable:
    """Submanifold neighbours of one level (offsets row-major over (x, y, z), centre included)."""

    kernel_size: int
    pairs: Pairs

    @property
    def num_voxels(self) -> int:
        return self.pairs.num_rows


@dataclass(eq=False)
class DownTable:
    """k2 s2 between level s (fine) and s+1: ``child`` [N_coarse rows] lists each coarse voxel's
    fine children by slot ``a = 4*(x&1) + 2*(y&1) + (z&1)``; ``up`` [N_fine rows] holds each fine
    voxel's parent at its own slot. Both directions are pair convolutions with 8 weight slices."""

    child: Pairs
    up: Pairs


@dataclass(eq=False)
class TableMaps:
    """Every pair list a forward needs, rows of each level in key-sorted order (voxelize's order,
    so ``input_order`` is the identity). Duck-types the parts of :class:`.kmap.KernelMaps` the
    models and :func:`clip2scene_ros.models.inputs.prepare_inputs` read."""

    keys: list[Tensor]  # int64 [N_s] packed voxel keys per level, ascending
    subm: list[dict[int, SubmTable]]
    down: list[DownTable]
    primary_kernel: int = 3
    _identity: Tensor | None = field(default=None, repr=False)
    _coords: list[Tensor] | None = field(default=None, repr=False)
    _identities: dict[int, Pairs] = field(default_factory=dict, repr=False)

    @property
    def num_levels(self) -> int:
        return len(self.keys)

    @property
    def coords(self) -> list[Tensor]:
        """int64 [N_s, 4] voxel coordinates per level (unpacked on first use: inference needs none)."""
        if self._coords is None:
            self._coords = [unpack_keys(k) for k in self.keys]
        return self._coords

    @property
    def input_order(self) -> Tensor:
        if self._identity is None:
            self._identity = torch.arange(self.keys[0].shape[0])
        return self._identity

    input_rank = input_order

    def subm_map(self, level: int, kernel_size: int | None = None) -> SubmTable:
        return self.subm[level][self.primary_kernel if kernel_size is None else kernel_size]

    def identity(self, level: int) -> Pairs:
        """Each row of a level with itself: a 1x1x1 convolution as a pair convolution."""
        if level not in self._identities:
            n = self.keys[level].shape[0]
            rows = torch.arange(n, dtype=torch.int32)
            self._identities[level] = Pairs(torch.tensor([0, n], dtype=torch.int64), rows, rows, n)
        return self._identities[level]


def subm_pairs(keys: Tensor, kernel_size: int) -> Pairs:
    """Submanifold :class:`Pairs` (centre included) over unique ascending int64 keys (CPU)."""
    lib = _lib_or_raise()
    keys = keys.contiguous()
    n, k = keys.shape[0], kernel_size**3
    k_ptr = torch.empty(k + 1, dtype=torch.int64)
    p_out, p_in = torch.empty(k * n, dtype=torch.int32), torch.empty(k * n, dtype=torch.int32)
    r = kernel_size // 2
    lib.c2s_subm_pairs(keys.data_ptr(), n, r, AXIS_BITS, k_ptr.data_ptr(), p_out.data_ptr(), p_in.data_ptr())
    m = int(k_ptr[-1])
    return Pairs(k_ptr, p_out[:m], p_in[:m], n)


def voxelize_keys(points: Tensor, voxel_size: float) -> tuple[Tensor, Tensor, Tensor] | None:
    """One cloud [P, 3+F] (float32, CPU) -> ``(keys [N], feats [N, 3+F], point_to_voxel [P])`` as
    :func:`.voxelize.voxelize` gives them (keys = its packed coordinates, batch 0; means summed in
    point order; -1 for points with a NaN/Inf column), in one pass and a radix sort. None when a
    coordinate is beyond the hashable range (:func:`.voxelize.voxelize` then raises the error)."""
    lib = _lib_or_raise()
    pts = points.detach().to(torch.float32).contiguous()
    n, c = pts.shape
    keys, feats = torch.empty(n, dtype=torch.int64), torch.empty((n, c), dtype=torch.float32)
    p2v = torch.empty(n, dtype=torch.int64)
    v = float(voxel_size)
    nv = lib.c2s_voxelize(
        pts.data_ptr(), n, c, v, v, v, AXIS_BITS, _BIAS, COORD_LIMIT, keys.data_ptr(), feats.data_ptr(), p2v.data_ptr()
    )
    return None if nv < 0 else (keys[:nv], feats[:nv], p2v)


def build_table_maps(coords: Tensor, num_levels: int = 5, kernel_sizes: tuple[int, ...] = (3,)) -> TableMaps:
    """:class:`TableMaps` from voxel coordinates [N, 4] sorted by (batch, x, y, z) (:func:`voxelize`'s
    order; CPU). Same neighbours as :func:`.kmap.build_kernel_maps`, in natural row order."""
    coords = torch.as_tensor(coords)
    check_coords(coords, "coordinates passed to build_table_maps")
    keys = pack_keys(coords).contiguous()
    if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
        raise ValueError("coordinates must be unique and sorted by (batch, x, y, z), as voxelize() returns them")
    return table_maps_from_keys(keys, num_levels, kernel_sizes)


def table_maps_from_keys(keys: Tensor, num_levels: int = 5, kernel_sizes: tuple[int, ...] = (3,)) -> TableMaps:
    """:class:`TableMaps` from unique ascending packed keys (:func:`voxelize_keys`)."""
    lib = _lib_or_raise()
    level_keys, down = [keys.contiguous()], []
    for _ in range(num_levels - 1):
        fine = level_keys[-1]
        nf = fine.shape[0]
        pk = torch.empty_like(fine)
        lib.c2s_parent_keys(fine.data_ptr(), nf, AXIS_BITS, _BIAS, pk.data_ptr())
        coarse, parent = torch.unique(pk, sorted=True, return_inverse=True)
        slot_ptr = torch.empty(9, dtype=torch.int64)
        f_rows, p_rows = torch.empty(nf, dtype=torch.int32), torch.empty(nf, dtype=torch.int32)
        lib.c2s_down_pairs(
            fine.data_ptr(), parent.data_ptr(), nf, AXIS_BITS, slot_ptr.data_ptr(), f_rows.data_ptr(), p_rows.data_ptr()
        )
        down.append(DownTable(Pairs(slot_ptr, p_rows, f_rows, coarse.shape[0]), Pairs(slot_ptr, f_rows, p_rows, nf)))
        level_keys.append(coarse)
    sizes = list(dict.fromkeys(kernel_sizes))
    subm = [{k: SubmTable(k, subm_pairs(lk, k)) for k in sizes} for lk in level_keys]
    return TableMaps(level_keys, subm, down, sizes[0])


# -- convolution --------------------------------------------------------------------------------


def pair_conv(
    x: Tensor,
    weight: Tensor,
    pairs: Pairs,
    bias: Tensor | None = None,
    relu: bool = False,
    residual: Tensor | None = None,
    transpose: tuple[Pairs, bool] | None = None,
) -> Tensor:
    """``out[o] = act(bias + sum over o's pairs of x[p_in] @ weight[k] + residual[o])``; fp32 CPU.
    Per output element the terms add in offset order.

    ``transpose`` makes the call differentiable (training): the pairs of the transposed layer and
    whether its weight slices come in mirrored order. A submanifold layer is its own transpose
    with mirrored offsets (pair (o, i) at offset k is pair (i, o) at K-1-k), so ``(pairs, True)``;
    a k2 s2 down layer's transpose is the up layer on the same slots (``(up, False)``), and back.
    """
    k, cin, cout = weight.shape
    if x.shape[1] != cin:
        raise ValueError(f"input has {x.shape[1]} channels, the layer expects {cin}")
    if pairs.num_offsets != k:
        raise ValueError(f"weight has {k} offsets but the map is for {pairs.num_offsets}")
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        raise TypeError(f"the fused kernels are fp32 only, got {x.dtype} / {weight.dtype}")
    n = pairs.num_rows
    if residual is not None and residual.shape != (n, cout):
        raise ValueError(f"residual must be [{n}, {cout}], got {tuple(residual.shape)}")
    grads = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, residual))
    if not grads:
        return _pair_conv(x, weight, pairs, bias, relu, residual)
    if transpose is None:
        raise RuntimeError("pair_conv needs the transposed pairs (transpose=...) to compute gradients")
    out = _PairConv.apply(x, weight, bias, pairs, transpose[0], transpose[1])
    if residual is not None:
        out = out + residual
    return torch.relu(out) if relu else out


def _pair_conv(x: Tensor, weight: Tensor, pairs: Pairs, bias: Tensor | None = None, relu: bool = False,
               residual: Tensor | None = None) -> Tensor:  # fmt: skip
    """The kernel call itself for :func:`pair_conv` (no autograd; shapes checked there)."""
    lib = _lib_or_raise()
    x, weight = x.detach().contiguous(), weight.detach().contiguous()
    bias = None if bias is None else bias.detach().contiguous()
    residual = None if residual is None else residual.detach().contiguous()
    n, cout = pairs.num_rows, weight.shape[2]
    out = torch.empty((n, cout), dtype=torch.float32)
    if n:
        lib.c2s_pair_conv_f32(
            x.data_ptr(), weight.shape[1], weight.data_ptr(), weight.shape[0], cout, pairs.k_ptr.data_ptr(),
            pairs.p_out.data_ptr(), pairs.p_in.data_ptr(), n, _ptr(bias), _ptr(residual), int(relu), out.data_ptr(),
            _threads(),
        )  # fmt: skip
    return out


def pair_weight_grad(x: Tensor, grad_out: Tensor, pairs: Pairs) -> Tensor:
    """``dW[k] = sum over slice k's pairs of x[p_in]^T grad_out[p_out]``: [K, C_in, C_out]."""
    k, cin, cout = pairs.num_offsets, x.shape[1], grad_out.shape[1]
    gw = x.new_zeros((k, cin, cout))
    if pairs.p_in.numel() == 0:
        return gw
    xg = x.index_select(0, pairs.p_in.long())
    gg = grad_out.index_select(0, pairs.p_out.long())
    bounds = pairs.k_ptr.tolist()
    for i in range(k):
        a, b = bounds[i], bounds[i + 1]
        if b > a:
            torch.mm(xg[a:b].t(), gg[a:b], out=gw[i])
    return gw


class _PairConv(torch.autograd.Function):
    """A pair convolution with its backward: the input gradient is the transposed layer run by the
    same fused kernel, the weight gradient one matmul per weight slice over the gathered pairs."""

    @staticmethod
    def forward(ctx, x, weight, bias, pairs, back_pairs, mirrored):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, weight)
        ctx.pairs, ctx.back_pairs, ctx.mirrored, ctx.has_bias = pairs, back_pairs, mirrored, bias is not None
        return _pair_conv(x, weight, pairs, bias)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            wt = weight.transpose(1, 2)
            gx = _pair_conv(grad, (wt.flip(0) if ctx.mirrored else wt).contiguous(), ctx.back_pairs)
        if ctx.needs_input_grad[1]:
            gw = pair_weight_grad(x.detach(), grad, ctx.pairs)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(0)
        return gx, gw, gb, None, None, None
