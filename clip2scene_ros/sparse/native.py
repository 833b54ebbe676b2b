"""Fused fp32 CPU kernels (``native.cpp``) and the neighbour tables they read.

The eager inference path on CPU spends most of its time in many small operators (per-offset
gathers, matmuls and sums at 8-96 channels) and in building the pair lists. Here one call per
layer reads each output row's neighbours straight from the input through an int32 table
``[rows, K]`` (-1 = none), and the tables are built by merge walks over the sorted voxel keys.

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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .voxelize import check_coords, offset_key, pack_keys, unpack_keys

LOG = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("native.cpp")
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-std=c++17", "-shared", "-fPIC", "-pthread"]
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


def _library_path(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), version.encode(), _cpu_flags().encode()):
        h.update(part)
    return cache_dir() / f"c2s_sparse_{h.hexdigest()[:16]}.so"


def build(compiler: str | None = None) -> Path:
    """Compile the kernels for this machine (no-op when the cached library exists); its path."""
    compiler = compiler or os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++) found")
    path = _library_path(compiler)
    if path.is_file():
        return path
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
    lib.c2s_table_to_pairs.argtypes = [p, i64, i64, p, p, p]
    lib.c2s_table_to_pairs.restype = None
    lib.c2s_subm_table.argtypes = [p, i64, p, i64, i64, p, i32]
    lib.c2s_subm_table.restype = None
    _lib = lib
    return lib


def available() -> bool:
    return load() is not None


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _threads() -> int:
    return max(1, torch.get_num_threads())


# -- neighbour tables ---------------------------------------------------------------------------


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

    @classmethod
    def from_table(cls, table: Tensor) -> Pairs:
        """From a dense int32 table [N, K] (-1 = no neighbour)."""
        lib = _lib_or_raise()
        table = table.contiguous()
        n, k = table.shape
        k_ptr = torch.empty(k + 1, dtype=torch.int64)
        lib.c2s_table_to_pairs(table.data_ptr(), n, k, k_ptr.data_ptr(), None, None)
        torch.cumsum(k_ptr, 0, out=k_ptr)
        m = int(k_ptr[-1])
        p_out, p_in = torch.empty(m, dtype=torch.int32), torch.empty(m, dtype=torch.int32)
        lib.c2s_table_to_pairs(table.data_ptr(), n, k, k_ptr.data_ptr(), p_out.data_ptr(), p_in.data_ptr())
        return cls(k_ptr, p_out, p_in, n)


@dataclass(eq=False)
class SubmTable:
    """Submanifold neighbours of one level: ``table`` int32 [N, K] (-1 = none; offsets row-major
    over (x, y, z), centre included) and the same as :class:`Pairs`."""

    kernel_size: int
    table: Tensor
    pairs: Pairs

    @property
    def num_voxels(self) -> int:
        return int(self.table.shape[0])


@dataclass(eq=False)
class DownTable:
    """k2 s2 between level s (fine) and s+1: ``child`` [N_coarse rows] lists each coarse voxel's
    fine children by slot ``a = 4*(x&1) + 2*(y&1) + (z&1)``; ``up`` [N_fine rows] holds each fine
    voxel's parent at its own slot. Both directions are pair convolutions with 8 weight slices."""

    child: Pairs
    up: Pairs


@dataclass(eq=False)
class TableMaps:
    """Every table a forward needs, rows of each level in key-sorted order (voxelize's order, so
    ``input_order`` is the identity). Duck-types the parts of :class:`.kmap.KernelMaps` the models
    and :func:`clip2scene_ros.models.inputs.prepare_inputs` read."""

    coords: list[Tensor]
    subm: list[dict[int, SubmTable]]
    down: list[DownTable]
    primary_kernel: int = 3
    _identity: Tensor | None = field(default=None, repr=False)

    @property
    def num_levels(self) -> int:
        return len(self.coords)

    @property
    def input_order(self) -> Tensor:
        if self._identity is None:
            self._identity = torch.arange(self.coords[0].shape[0], device=self.coords[0].device)
        return self._identity

    input_rank = input_order

    def subm_map(self, level: int, kernel_size: int | None = None) -> SubmTable:
        return self.subm[level][self.primary_kernel if kernel_size is None else kernel_size]


def subm_table(keys: Tensor, kernel_size: int) -> Tensor:
    """int32 [N, K] neighbour table over unique ascending int64 keys (CPU)."""
    lib = _lib_or_raise()
    r = kernel_size // 2
    cols = torch.tensor([offset_key(dx, dy, 0) for dx in range(-r, r + 1) for dy in range(-r, r + 1)])
    keys = keys.contiguous()
    n = keys.shape[0]
    table = torch.empty((n, kernel_size**3), dtype=torch.int32)
    if n:
        lib.c2s_subm_table(keys.data_ptr(), n, cols.data_ptr(), len(cols), r, table.data_ptr(), _threads())
    return table


def build_table_maps(coords: Tensor, num_levels: int = 5, kernel_sizes: tuple[int, ...] = (3,)) -> TableMaps:
    """:class:`TableMaps` from voxel coordinates [N, 4] sorted by (batch, x, y, z) (:func:`voxelize`'s
    order; CPU). Same neighbours as :func:`.kmap.build_kernel_maps`, in natural row order."""
    coords = torch.as_tensor(coords)
    check_coords(coords, "coordinates passed to build_table_maps")
    keys = pack_keys(coords)
    if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
        raise ValueError("coordinates must be unique and sorted by (batch, x, y, z), as voxelize() returns them")
    level_keys, parents = [keys], []
    for _ in range(num_levels - 1):
        c = unpack_keys(level_keys[-1])
        c[:, 1:] = c[:, 1:] >> 1  # floor division by 2, also for negative coordinates
        ck, parent = torch.unique(pack_keys(c), sorted=True, return_inverse=True)
        level_keys.append(ck)
        parents.append(parent)
    sizes = list(dict.fromkeys(kernel_sizes))
    subm = []
    for lk in level_keys:
        tables = {k: subm_table(lk, k) for k in sizes}
        subm.append({k: SubmTable(k, t, Pairs.from_table(t)) for k, t in tables.items()})
    level_coords = [coords.long(), *(unpack_keys(lk) for lk in level_keys[1:])]
    down = []
    for s, parent in enumerate(parents):
        fine = level_coords[s]
        nf, nc = fine.shape[0], level_keys[s + 1].shape[0]
        slot = ((fine[:, 1] & 1) << 2) | ((fine[:, 2] & 1) << 1) | (fine[:, 3] & 1)
        child = torch.full((nc, 8), -1, dtype=torch.int32)
        child[parent, slot] = torch.arange(nf, dtype=torch.int32)
        up = torch.full((nf, 8), -1, dtype=torch.int32)
        up[torch.arange(nf), slot] = parent.int()
        down.append(DownTable(Pairs.from_table(child), Pairs.from_table(up)))
    return TableMaps(level_coords, subm, down, sizes[0])


# -- convolution --------------------------------------------------------------------------------


def pair_conv(
    x: Tensor,
    weight: Tensor,
    pairs: Pairs,
    bias: Tensor | None = None,
    relu: bool = False,
    residual: Tensor | None = None,
) -> Tensor:
    """``out[o] = act(bias + sum over o's pairs of x[p_in] @ weight[k] + residual[o])``; fp32 CPU,
    no autograd. Per output element the terms add in offset order."""
    lib = _lib_or_raise()
    k, cin, cout = weight.shape
    if x.shape[1] != cin:
        raise ValueError(f"input has {x.shape[1]} channels, the layer expects {cin}")
    if pairs.num_offsets != k:
        raise ValueError(f"weight has {k} offsets but the map is for {pairs.num_offsets}")
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        raise TypeError(f"the fused kernels are fp32 only, got {x.dtype} / {weight.dtype}")
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        raise RuntimeError("the fused kernels have no backward: train with build_kernel_maps() maps")
    x, weight = x.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    n = pairs.num_rows
    if residual is not None:
        residual = residual.contiguous()
        if residual.shape != (n, cout):
            raise ValueError(f"residual must be [{n}, {cout}], got {tuple(residual.shape)}")
    out = torch.empty((n, cout), dtype=torch.float32)
    if n:
        lib.c2s_pair_conv_f32(
            x.data_ptr(), cin, weight.data_ptr(), k, cout, pairs.k_ptr.data_ptr(), pairs.p_out.data_ptr(),
            pairs.p_in.data_ptr(), n, _ptr(bias), _ptr(residual), int(relu), out.data_ptr(), _threads(),
        )  # fmt: skip
    return out
