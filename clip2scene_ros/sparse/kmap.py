"""Kernel maps: the data-dependent neighbour structure, built outside the network with torch ops.

Everything here is sort + unique + searchsorted on packed int64 keys, so the same code runs on CPU
and CUDA, and none of it has to live in an exported ONNX/TensorRT graph (TensorRT has no
``Unique`` and a capped ``TopK``).

Layout of the maps (what the convolutions in :mod:`.ops` consume):

* Each stride level ``s`` has its own voxel order: rows sorted by the number of (non-centre)
  submanifold neighbours, descending. Then, for every column ``j`` of a row's neighbour list, the
  rows that have a ``j``-th neighbour form a prefix ``[0, n_j)``; adding the per-offset results
  back is a gather plus a prefix add, scatter-free and proportional to the real pair count.
* :class:`SubmMap` (odd kernel ``k``, ``K = k**3`` offsets, row-major over (x, y, z), centre
  excluded): ``pair_in`` [M] input rows grouped by offset (segment ``i`` = ``pair_bounds[i]:
  pair_bounds[i+1]``), and ``acc_idx`` [M] positions into the concatenated per-offset results,
  grouped by column (segment ``j`` holds rows ``0..n_j-1``).
* :class:`DownMap` (k2 s2 between levels ``s`` and ``s+1``; the transposed k2 s2 up-conv reuses it):
  fine rows grouped by child slot ``a = 4*(x&1) + 2*(y&1) + (z&1)`` (``fine = 2*coarse + a``),
  their parents, the slot bounds, ``child_table`` [N_coarse, 8] (position of each child in the
  grouped order, ``N_fine`` = zero row) and ``inv`` [N_fine] (position of each fine row).
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .voxelize import check_coords, offset_key, pack_keys, unpack_keys

if TYPE_CHECKING:
    from .native import TableMaps


def kernel_offsets(kernel_size: int) -> list[tuple[int, int, int]]:
    """Offsets of an odd kernel, row-major over (x, y, z) (x slowest; spconv's KRSC order)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"submanifold kernels must have an odd size, got {kernel_size}")
    r = range(-(kernel_size // 2), kernel_size // 2 + 1)
    return [(dx, dy, dz) for dx in r for dy in r for dz in r]


def is_tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


class _DynSlice(torch.autograd.Function):
    """``x[start:end]`` with tensor bounds that stays dynamic in a traced ONNX graph (``Slice``)."""

    @staticmethod
    def forward(ctx, x: Tensor, start: Tensor, end: Tensor) -> Tensor:  # noqa: ANN001
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return x[int(start) : int(end)]

    @staticmethod
    def symbolic(g, x, start, end):  # noqa: ANN001, ANN205
        axes = g.op("Constant", value_t=torch.tensor([0], dtype=torch.int64))
        s = g.op("Unsqueeze", start, axes)
        e = g.op("Unsqueeze", end, axes)
        return g.op("Slice", x, s, e, axes)


def dyn_slice(x: Tensor, start: Tensor, end: Tensor) -> Tensor:
    return _DynSlice.apply(x, start, end)


def gather_sum(y: Tensor, table: Tensor) -> Tensor:
    """``y[table].sum(0)`` for a column-major table [J, N] of rows of ``y`` [M, C] -> [N, C].

    Written as a row of ones times the gathered [J, N*C] block: exported, that is one MatMul,
    which ONNX Runtime runs 3-7x faster than its ReduceSum over either axis on these shapes
    (thin rows of 8-64 channels), and TensorRT accepts.
    """
    g = y[table].flatten(1)  # [J, N*C]
    ones = torch.ones((1, table.shape[0]), dtype=g.dtype, device=g.device)
    return torch.matmul(ones, g).reshape(-1, y.shape[1])


def _segments(t: Tensor, bounds: Tensor, cache: dict, name: str) -> list[Tensor]:
    """Split ``t`` at ``bounds``; cached per map so all layers of a level share the slices."""
    key = (name, is_tracing())
    if key not in cache:
        if key[1]:
            cache[key] = [dyn_slice(t, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
        else:
            b = bounds.tolist()
            cache[key] = [t[b[i] : b[i + 1]] for i in range(len(b) - 1)]
    return cache[key]


@dataclass(eq=False)
class SubmMap:
    """Submanifold neighbour map of one level (see module docstring)."""

    kernel_size: int
    num_voxels: int
    pair_in: Tensor
    pair_bounds: Tensor
    acc_idx: Tensor
    acc_bounds: Tensor
    # Set when this map's rows are not sorted in the level order (a second kernel size).
    row_rank: Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_pairs(self) -> int:
        return int(self.pair_in.shape[0])

    def pair_segments(self) -> list[Tensor]:
        return _segments(self.pair_in, self.pair_bounds, self._cache, "pair")

    def acc_segments(self) -> list[Tensor]:
        return _segments(self.acc_idx, self.acc_bounds, self._cache, "acc")

    def acc_lengths(self) -> list:
        """n_j per column: python ints eagerly, 0-d tensors when tracing."""
        key = ("len", is_tracing())
        if key not in self._cache:
            n = self.acc_bounds[1:] - self.acc_bounds[:-1]
            self._cache[key] = [n[j] for j in range(len(n))] if key[1] else n.tolist()
        return self._cache[key]

    def tensors(self) -> list[Tensor]:
        return [self.pair_in, self.pair_bounds, self.acc_idx, self.acc_bounds]

    def pair_bags(self) -> tuple[Tensor, Tensor]:
        """The per-offset results grouped by output row: ``flat`` [M] pair positions (rows of the
        concatenated per-offset products) bag after bag, ``starts`` [N] where each row's bag begins
        (``F.embedding_bag`` offsets; rows without neighbours get empty bags). In level order."""
        if "pair_bags" not in self._cache:
            n, m, dev = self.num_voxels, self.num_pairs, self.pair_in.device
            col_len = self.acc_bounds[1:] - self.acc_bounds[:-1]
            col = torch.repeat_interleave(torch.arange(len(col_len), device=dev), col_len)
            row = torch.arange(m, device=dev) - self.acc_bounds.index_select(0, col)
            counts = torch.bincount(row, minlength=n)
            starts = torch.cumsum(counts, 0) - counts
            flat = torch.empty(m, dtype=torch.long, device=dev)
            flat[starts.index_select(0, row) + col] = self.acc_idx
            if self.row_rank is not None:  # bags in level order, like the output
                counts = counts.index_select(0, self.row_rank)
                new_starts = torch.cumsum(counts, 0) - counts
                order = torch.repeat_interleave(starts.index_select(0, self.row_rank), counts)
                order += torch.arange(m, device=dev) - torch.repeat_interleave(new_starts, counts)
                flat, starts = flat.index_select(0, order), new_starts
            self._cache["pair_bags"] = (flat, starts)
        return self._cache["pair_bags"]

    def bag(self) -> tuple[Tensor, Tensor]:
        """Every (output row, offset) term as one bag per output row, for a matmul-first conv.

        Returns ``flat`` [N + M]: ``in_row * K + offset`` (a row of ``x @ W_cat`` viewed as
        [N * K, C_out]), grouped by output row with the centre term first, and ``starts`` [N]:
        where each row's bag begins (``F.embedding_bag`` offsets). Cached on the map.
        """
        if "bag" not in self._cache:
            k = self.kernel_size**3
            n, m = self.num_voxels, self.num_pairs
            dev = self.pair_in.device
            rows = torch.arange(n, device=dev)
            off = torch.tensor([i for i in range(k) if i != k // 2], dtype=torch.long, device=dev)
            pair_off = torch.repeat_interleave(off, self.pair_bounds[1:] - self.pair_bounds[:-1])
            # acc position p of column j holds the pair of output row p - acc_bounds[j]
            col_len = self.acc_bounds[1:] - self.acc_bounds[:-1]
            col = torch.repeat_interleave(torch.arange(len(col_len), device=dev), col_len)
            out_row = torch.arange(m, device=dev) - self.acc_bounds.index_select(0, col)
            counts = torch.bincount(out_row, minlength=n) + 1
            starts = torch.cumsum(counts, 0) - counts
            flat = torch.empty(n + m, dtype=torch.long, device=dev)
            pair = self.acc_idx
            flat[starts.index_select(0, out_row) + 1 + col] = self.pair_in.index_select(0, pair) * k + pair_off[pair]
            if self.row_rank is not None:  # bags in level order, like the output
                counts = counts.index_select(0, self.row_rank)
                order = torch.repeat_interleave(starts.index_select(0, self.row_rank), counts)
                new_starts = torch.cumsum(counts, 0) - counts
                order += torch.arange(n + m, device=dev) - torch.repeat_interleave(new_starts, counts)
                flat, starts = flat.index_select(0, order), new_starts
            flat[starts] = rows * k + k // 2
            self._cache["bag"] = (flat, starts)
        return self._cache["bag"]


@dataclass(eq=False)
class DownMap:
    """k2 s2 map between a fine level and the next coarser one (see module docstring)."""

    fine_idx: Tensor
    parent_idx: Tensor
    slot_bounds: Tensor
    child_table: Tensor
    inv: Tensor
    _cache: dict = field(default_factory=dict, repr=False)

    def fine_segments(self) -> list[Tensor]:
        return _segments(self.fine_idx, self.slot_bounds, self._cache, "fine")

    def parent_segments(self) -> list[Tensor]:
        return _segments(self.parent_idx, self.slot_bounds, self._cache, "parent")

    def tensors(self) -> list[Tensor]:
        return [self.fine_idx, self.parent_idx, self.slot_bounds, self.child_table, self.inv]


SUBM_INPUTS = ("pair_in", "pair_bounds", "acc_idx", "acc_bounds")
DOWN_INPUTS = ("fine_idx", "parent_idx", "slot_bounds", "child_table", "inv")


@dataclass(eq=False)
class KernelMaps:
    """All maps of one forward pass: built once, shared by every layer of the same level.

    coords[s]: int64 [N_s, 4] voxel coordinates of level s (stride 2**s) in that level's row order.
    input_order: int64 [N_0]; level-0 row r is row ``input_order[r]`` of the coords passed in.
    input_rank: the inverse permutation (input row -> level-0 row).
    """

    coords: list[Tensor]
    input_order: Tensor
    input_rank: Tensor
    subm: list[dict[int, SubmMap]]
    down: list[DownMap]
    primary_kernel: int = 3

    @property
    def num_levels(self) -> int:
        return len(self.coords)

    def subm_map(self, level: int, kernel_size: int | None = None) -> SubmMap:
        k = self.primary_kernel if kernel_size is None else kernel_size
        try:
            return self.subm[level][k]
        except (IndexError, KeyError):
            raise KeyError(
                f"no submanifold map for level {level}, kernel {k}; build_kernel_maps(..., "
                f"num_levels>{level}, kernel_sizes including {k})"
            ) from None

    def to(self, device: torch.device | str) -> KernelMaps:
        """A copy on ``device`` (maps are usually built where the points are)."""

        def mv(obj):  # noqa: ANN001, ANN202
            kw = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "_cache"}
            kw = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in kw.items()}
            return type(obj)(**kw)

        return KernelMaps(
            [c.to(device) for c in self.coords],
            self.input_order.to(device),
            self.input_rank.to(device),
            [{k: mv(m) for k, m in level.items()} for level in self.subm],
            [mv(d) for d in self.down],
            self.primary_kernel,
        )

    def flat_tensors(self) -> list[Tensor]:
        """The tensors an exported graph takes (primary subm map per level, then down maps)."""
        out: list[Tensor] = []
        for s in range(self.num_levels):
            out += self.subm[s][self.primary_kernel].tensors()
        for d in self.down:
            out += d.tensors()
        return out

    @staticmethod
    def input_names(num_levels: int) -> list[str]:
        names = [f"subm{s}_{n}" for s in range(num_levels) for n in SUBM_INPUTS]
        names += [f"down{s}_{n}" for s in range(num_levels - 1) for n in DOWN_INPUTS]
        return names

    @classmethod
    def from_flat(cls, tensors: list[Tensor], num_levels: int, primary_kernel: int = 3) -> KernelMaps:
        """Rebuild the structure the network needs from :meth:`flat_tensors` (used when tracing)."""
        it = iter(tensors)
        subm = []
        for _ in range(num_levels):
            pair_in, pair_bounds, acc_idx, acc_bounds = (next(it) for _ in SUBM_INPUTS)
            subm.append({primary_kernel: SubmMap(primary_kernel, -1, pair_in, pair_bounds, acc_idx, acc_bounds)})
        down = [DownMap(*(next(it) for _ in DOWN_INPUTS)) for _ in range(num_levels - 1)]
        empty = torch.zeros(0, dtype=torch.long)
        return cls([empty] * num_levels, empty, empty, subm, down, primary_kernel)


def _searchsorted(sorted_keys: Tensor, query: Tensor) -> Tensor:
    # numpy's binary search narrows the range for sorted queries: several times faster on CPU.
    if sorted_keys.device.type == "cpu":
        return torch.from_numpy(np.searchsorted(sorted_keys.numpy(), query.numpy()))
    return torch.searchsorted(sorted_keys, query)


def _offset_pairs(keys: Tensor, kernel_size: int) -> dict[int, tuple[Tensor, Tensor]]:
    """Neighbour pairs per non-centre offset over the sorted ``keys`` [N]:
    ``{offset index: (out rows, in rows)}`` with ``keys[in] == keys[out] + delta(offset)``.

    Keys are sorted with z fastest, so the neighbours in one (dx, dy) column lie at most 2r
    positions after a single search. Only half of the offsets are searched; the other half follows
    by symmetry (j is i's neighbour at d  <=>  i is j's neighbour at -d). Within an offset both
    lists are ascending, since adding a constant to a key preserves order.
    """
    n = keys.shape[0]
    k, r = kernel_size, kernel_size // 2
    out: dict[int, tuple[Tensor, Tensor]] = {}
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=keys.device)
        return {i: (empty, empty) for i in range(k**3) if i != k**3 // 2}
    rows = torch.arange(n, device=keys.device)

    def index(dx: int, dy: int, dz: int) -> int:
        return ((dx + r) * k + (dy + r)) * k + (dz + r)

    for dx in range(0, r + 1):
        for dy in range(-r, r + 1):
            if dx == 0 and dy < 0:
                continue
            centre_column = dx == 0 and dy == 0
            # first candidate position: the key itself for the own column, else a search.
            start = rows if centre_column else _searchsorted(keys, keys + offset_key(dx, dy, -r))
            cand = [keys.index_select(0, (start + j).clamp_(max=n - 1)) for j in range(2 * r + 1)]
            for dz in range(1 if centre_column else -r, r + 1):
                q = keys + offset_key(dx, dy, dz)
                found = torch.full_like(rows, -1)
                # the key at offset dz is at most dz (own column) or dz + r (others) places on.
                for j in range(1 if centre_column else 0, (dz if centre_column else dz + r) + 1):
                    found = torch.where(cand[j] == q, (start + j).clamp(max=n - 1), found)
                src = (found >= 0).nonzero().squeeze(1)
                dst = found.index_select(0, src)
                out[index(dx, dy, dz)] = (src, dst)
                out[index(-dx, -dy, -dz)] = (dst, src)
    return dict(sorted(out.items()))


def _subm_map(
    pairs: dict[int, tuple[Tensor, Tensor]], n: int, kernel_size: int, rank: Tensor, sorted_rows: bool
) -> SubmMap:
    """Build a :class:`SubmMap` from natural-order pairs, remapped to level order by ``rank``."""
    device = rank.device
    outs = [rank.index_select(0, o) for o, _ in pairs.values()]
    ins = [rank.index_select(0, i) for _, i in pairs.values()]
    row_rank = None
    if not sorted_rows:  # a second kernel size: its own row order, mapped back by row_rank
        cnt = torch.bincount(torch.cat(outs), minlength=n) if outs else torch.zeros(n, dtype=torch.long)
        row_order = torch.argsort(-cnt, stable=True)
        row_rank = torch.empty_like(row_order)
        row_rank[row_order] = torch.arange(n, device=device)
        outs = [row_rank.index_select(0, o) for o in outs]
    zero = torch.zeros(1, dtype=torch.long, device=device)
    lengths = torch.tensor([len(o) for o in outs], dtype=torch.long, device=device)
    pair_bounds = torch.cat([zero, lengths.cumsum(0)])
    pair_in = torch.cat(ins) if ins else zero[:0]
    # column of each pair = how many earlier offsets the same output row already has.
    seen = torch.zeros(n, dtype=torch.long, device=device)
    cols = []
    for o in outs:
        cols.append(seen.index_select(0, o))
        seen.index_add_(0, o, torch.ones_like(o))
    m = int(pair_bounds[-1])
    # rows are sorted by pair count, so column j holds exactly rows 0..n_j-1, in order.
    n_j = torch.bincount(seen, minlength=len(outs) + 1).flip(0).cumsum(0).flip(0)[1:]
    acc_bounds = torch.cat([zero, n_j.cumsum(0)])
    acc_idx = torch.empty(m, dtype=torch.long, device=device)
    if m:
        col = torch.cat(cols)
        acc_idx[acc_bounds.index_select(0, col) + torch.cat(outs)] = torch.arange(m, device=device)
    return SubmMap(kernel_size, n, pair_in, pair_bounds, acc_idx, acc_bounds, row_rank)


def build_kernel_maps(
    coords: Tensor,
    num_levels: int = 5,
    kernel_sizes: tuple[int, ...] = (3,),
    primary_kernel: int | None = None,
) -> KernelMaps:
    """Build every map a forward pass needs from voxel coordinates [N, 4] (batch, x, y, z).

    ``num_levels`` counts the resolution levels (stride 1, 2, ..., 2**(num_levels-1)); a
    MinkUNet with four k2s2 down-convolutions needs 5. Submanifold maps are built at every level
    for each size in ``kernel_sizes``; the level row order follows ``primary_kernel`` (default: the
    first size).
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    coords = torch.as_tensor(coords)
    check_coords(coords, "coordinates passed to build_kernel_maps")
    primary = kernel_sizes[0] if primary_kernel is None else primary_kernel
    sizes = list(dict.fromkeys([primary, *kernel_sizes]))
    for k in sizes:
        kernel_offsets(k)  # validates odd sizes
    device = coords.device
    keys = pack_keys(coords)
    keys0, perm0 = torch.sort(keys)
    if keys0.numel() > 1 and bool((keys0[1:] == keys0[:-1]).any()):
        raise ValueError("duplicate voxel coordinates: voxelize the points first (each voxel once)")
    # Natural (key-sorted) order per level, and the parent of every fine voxel.
    nat_keys = [keys0]
    parents: list[Tensor] = []
    for _ in range(num_levels - 1):
        c = unpack_keys(nat_keys[-1])
        c[:, 1:] = c[:, 1:] >> 1  # floor division by 2, also for negative coordinates
        ck, parent = torch.unique(pack_keys(c), sorted=True, return_inverse=True)
        nat_keys.append(ck)
        parents.append(parent)

    orders, ranks, subm = [], [], []
    for nk in nat_keys:
        n = nk.shape[0]
        pairs = {k: _offset_pairs(nk, k) for k in sizes}
        outs = [o for o, _ in pairs[primary].values()]
        cnt = torch.bincount(torch.cat(outs), minlength=n) if outs else torch.zeros(n, dtype=torch.long)
        order = torch.argsort(-cnt, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=device)
        orders.append(order)
        ranks.append(rank)
        subm.append({k: _subm_map(pairs[k], n, k, rank, sorted_rows=k == primary) for k in sizes})

    level_coords = [unpack_keys(nk[o]) for nk, o in zip(nat_keys, orders)]
    down = []
    for s in range(num_levels - 1):
        fine = level_coords[s]
        nf, ncoarse = fine.shape[0], level_coords[s + 1].shape[0]
        parent = ranks[s + 1][parents[s][orders[s]]]
        slot = ((fine[:, 1] & 1) << 2) | ((fine[:, 2] & 1) << 1) | (fine[:, 3] & 1)
        fine_idx = torch.argsort(slot * max(nf, 1) + torch.arange(nf, device=device))
        inv = torch.empty_like(fine_idx)
        inv[fine_idx] = torch.arange(nf, device=device)
        child = torch.full((ncoarse, 8), nf, dtype=torch.long, device=device)
        child[parent, slot] = inv
        zero = torch.zeros(1, dtype=torch.long, device=device)
        bounds = torch.cat([zero, torch.bincount(slot, minlength=8).cumsum(0)])
        down.append(DownMap(fine_idx, parent[fine_idx], bounds, child, inv))

    input_order = perm0[orders[0]]
    input_rank = torch.empty_like(input_order)
    input_rank[input_order] = torch.arange(len(input_order), device=device)
    return KernelMaps(level_coords, input_order, input_rank, subm, down, primary)


# -- padded form for exported graphs -----------------------------------------------------------
# A traced graph with one Slice per offset and column grows to thousands of nodes, which ONNX
# Runtime needs minutes to load. The exported graph therefore takes the same maps padded into a
# few rectangular tensors whose sizes are ordinary dynamic axes (no shape tensors for TensorRT).
# Offsets are sorted by pair count and split into OFFSET_GROUPS groups, each padded only to its own
# longest offset (one batched MatMul per group); output rows (already sorted by neighbour count)
# are split into ROW_BUCKETS buckets, each padded only to its own largest count (one Gather and one
# gather_sum MatMul per bucket). Split points minimise the padded size, so the graph does about the real
# pair count of work (1.1-1.6x on LiDAR scans with 3 groups, against 1.9-7.7x with one padded block).

# 4 and 4: ~6 % faster in ONNX Runtime than 3 and 3 on the shipped student (fewer padded products
# against a few more nodes); more groups bring nothing measurable
OFFSET_GROUPS = 4
ROW_BUCKETS = 4


@dataclass(eq=False)
class PaddedSubm:
    pidx: list[Tensor]  # per offset group: [K_g, P_g] input rows, padded with 0 (results never read)
    poff: list[Tensor]  # per offset group: [K_g] offset positions among the K-1 non-centre offsets
    ptable: list[Tensor]  # per row bucket: [J_b, N_b] positions into the concatenated group results


def padded_subm_inputs() -> tuple[str, ...]:
    return (
        *(f"pidx{g}" for g in range(OFFSET_GROUPS)),
        *(f"poff{g}" for g in range(OFFSET_GROUPS)),
        *(f"ptable{b}" for b in range(ROW_BUCKETS)),
    )


@dataclass(eq=False)
class PaddedDown:
    fine: Tensor  # [8, Q] fine rows per slot, padded with 0 (results never read)
    parent: Tensor  # [8, Q] their parents, padded with 0 (results never read)
    child: Tensor  # [8, N_coarse] positions of each child in the flattened [8*Q] results, pad 8*Q
    inv: Tensor  # [N_fine] position of each fine row in the flattened [8*Q] results


PADDED_DOWN_INPUTS = ("fine", "parent", "child", "inv")


def split_runs(sizes: list[int], parts: int, weights: list[int] | None = None) -> list[int]:
    """Cut a non-increasing list into at most ``parts`` contiguous runs minimising
    sum(weight(run) * run[0]): the padded size when every run is padded to its first (largest)
    entry, ``weights`` being how many items each entry stands for (default 1). Returns run starts.
    Dynamic programming over (runs used, end of the last run): O(parts * n^2), n <= 27 here."""
    n = len(sizes)
    if n == 0:
        return [0]
    prefix = np.cumsum([0, *([1] * n if weights is None else weights)], dtype=np.float64)
    # cost[a, e]: entries [a, e) as one run padded to sizes[a] (a < e; inf elsewhere)
    cost = np.where(
        np.arange(n)[:, None] < np.arange(n + 1)[None, :],
        (prefix[None, :] - prefix[:n, None]) * np.asarray(sizes, np.float64)[:, None],
        np.inf,
    )
    # best[e]: least cost of covering entries [0, e) with the runs so far; starts[k][e]: last run's start
    best = np.full(n + 1, np.inf)
    best[0] = 0
    starts: list[list[int]] = []
    for _ in range(min(parts, n)):
        total = best[:n, None] + cost  # [a, e]
        arg = np.argmin(total, 0)  # first minimum, as a scan in order would pick
        nxt = total[arg, np.arange(n + 1)]
        nxt[0], arg[0] = 0, 0
        starts.append(arg.tolist())
        best = nxt
    # walk back from the end through the layers (using fewer runs never costs more here)
    cuts, e = [], n
    for arg in reversed(starts):
        if e == 0:
            break
        a = arg[e]
        cuts.append(a)
        e = a
    return sorted(set(cuts))


def pad_pairs(n: int, bounds: Tensor, out_rows: Tensor, in_rows: Tensor) -> PaddedSubm:
    """The padded layout of submanifold pairs grouped by non-centre offset (offset ``k`` holds
    pairs ``bounds[k]:bounds[k+1]``, in any order) over ``n`` rows in the level order (rows
    sorted by neighbour count, descending).

    Within an offset, pairs are laid out by ascending output row, so the graph's per-row sums
    read the group results in order rather than at random (~10 % faster on a 90k-voxel frame);
    a row's pairs fill its table columns in offset order.
    """
    dev = in_rows.device
    k1 = bounds.shape[0] - 1
    counts = torch.bincount(out_rows, minlength=n)
    if n > 1 and bool((counts[1:] > counts[:-1]).any()):
        raise ValueError("rows must be sorted by neighbour count, descending (the level order)")
    lens = (bounds[1:] - bounds[:-1]).tolist()
    order = sorted(range(k1), key=lambda i: -lens[i])
    starts = split_runs([lens[i] for i in order], OFFSET_GROUPS)
    ends = [*starts[1:], len(order)]
    # per offset: where its padded row starts in the concatenated group results
    row_start = [0] * k1
    shapes, base = [], 0
    for a, e in zip(starts, ends):
        p = max(lens[order[a]], 1)
        for r, i in enumerate(order[a:e]):
            row_start[i] = base + r * p
        shapes.append((e - a, p))
        base += (e - a) * p
    pad = base  # table entries past the group results: the graph reads zeros there
    # rows are sorted by count, so the runs of equal counts are the candidate bucket starts
    seg_count, seg_rows = (t.tolist() for t in torch.unique_consecutive(counts, return_counts=True))
    cuts = list(itertools.accumulate(seg_rows, initial=0))[:-1]
    b_starts = split_runs([max(c, 1) for c in seg_count], ROW_BUCKETS, seg_rows)
    b_rows = [cuts[a] for a in b_starts] + [n]
    b_shapes = [(b_rows[i + 1] - b_rows[i], max(seg_count[a], 1)) for i, a in enumerate(b_starts)]
    # tables are column-major ([J_b, N_b]) so that the graph sums a bucket over its leading axis:
    # pair (row r, column j) lands at table_base[b] + j * N[b] + (r - r0[b])
    t_base, acc = [], 0
    for r, j in b_shapes:
        t_base.append(acc)
        acc += r * j
    # padded slots read row 0: their products land where no table entry reads, so the graph
    # needs no zero row appended to x
    flat = torch.zeros((base,), dtype=torch.long, device=dev)
    tflat = torch.full((acc,), pad, dtype=torch.long, device=dev)
    layout = (row_start, b_rows, t_base)
    if not (dev.type == "cpu" and _native_pad(n, bounds, out_rows, in_rows, layout, flat, tflat)):
        _torch_pad(n, bounds, out_rows, in_rows, layout, flat, tflat)
    pidx = [t.view(k, p) for t, (k, p) in zip(torch.split(flat, [k * p for k, p in shapes]), shapes)]
    poff = [torch.tensor(order[a:e], dtype=torch.long, device=dev) for a, e in zip(starts, ends)]
    while len(pidx) < OFFSET_GROUPS:  # fewer offsets than groups: empty groups
        pidx.append(torch.zeros((0, 1), dtype=torch.long, device=dev))
        poff.append(torch.zeros((0,), dtype=torch.long, device=dev))
    tables = [t.view(j, r) for t, (r, j) in zip(torch.split(tflat, [r * j for r, j in b_shapes]), b_shapes)]
    while len(tables) < ROW_BUCKETS:
        tables.append(torch.full((1, 0), pad, dtype=torch.long, device=dev))
    return PaddedSubm(pidx, poff, tables)


PadLayout = tuple[list[int], list[int], list[int]]  # per-offset row starts, bucket row bounds, table bases


def _native_pad(n: int, bounds: Tensor, out_rows: Tensor, in_rows: Tensor, layout: PadLayout, flat: Tensor,
                tflat: Tensor) -> bool:  # fmt: skip
    """Fill ``flat`` (padded input rows) and ``tflat`` (tables) with the fused kernels' library,
    one pass over an [rows, offsets] grid; False where the library is not built."""
    from . import native  # the library's loader imports this module's neighbours

    lib = native.load()
    if lib is None:
        return False
    row_start, b_rows, t_base = (torch.tensor(v, dtype=torch.long) for v in layout)
    bounds, out_rows, in_rows = (t.contiguous().long() for t in (bounds, out_rows, in_rows))
    lib.c2s_pad_pairs(
        n, bounds.shape[0] - 1, bounds.data_ptr(), out_rows.data_ptr(), in_rows.data_ptr(),
        row_start.data_ptr(), t_base.shape[0], b_rows.data_ptr(), t_base.data_ptr(), flat.data_ptr(),
        tflat.data_ptr(),
    )  # fmt: skip
    return True


def _torch_pad(n: int, bounds: Tensor, out_rows: Tensor, in_rows: Tensor, layout: PadLayout, flat: Tensor,
               tflat: Tensor) -> None:  # fmt: skip
    """:func:`_native_pad` in torch operators (no compiler, or tensors on a GPU)."""
    dev, m = in_rows.device, in_rows.shape[0]
    k1 = bounds.shape[0] - 1
    row_start, b_rows, t_base = layout
    # an [offsets, rows] grid marking each pair's cell: running counts along it give each pair's
    # rank among its offset's pairs by output row, and its column among its row's pairs
    offset_of = torch.repeat_interleave(torch.arange(k1, device=dev), bounds[1:] - bounds[:-1], output_size=m)
    cell = offset_of * n + out_rows
    grid = torch.zeros((k1 * n,), dtype=torch.int32, device=dev)
    grid[cell] = 1
    grid = grid.view(k1, n)
    rank_in_offset = grid.cumsum(1, dtype=torch.int32).view(-1).index_select(0, cell).long() - 1
    col = grid.cumsum(0, dtype=torch.int32).view(-1).index_select(0, cell).long() - 1
    pos = torch.tensor(row_start, dtype=torch.long, device=dev).index_select(0, offset_of) + rank_in_offset
    flat[pos] = in_rows
    bucket = torch.bucketize(out_rows, torch.tensor(b_rows[1:-1], dtype=torch.long, device=dev), right=True)
    sizes = [b_rows[i + 1] - b_rows[i] for i in range(len(t_base))]
    info = torch.tensor([[tb, r0, r] for tb, r0, r in zip(t_base, b_rows, sizes)], dtype=torch.long)
    info = info.to(dev).index_select(0, bucket)
    tflat[info[:, 0] + col * info[:, 2] + (out_rows - info[:, 1])] = pos


def pad_subm(m: SubmMap) -> PaddedSubm:
    if m.row_rank is not None:
        raise ValueError("only the primary kernel's maps (level row order) can be padded for export")
    # acc position p of column j holds the pair of output row p - acc_bounds[j]
    dev = m.pair_in.device
    col_len = m.acc_bounds[1:] - m.acc_bounds[:-1]
    col = torch.repeat_interleave(torch.arange(len(col_len), device=dev), col_len)
    out_rows = torch.empty(m.num_pairs, dtype=torch.long, device=dev)
    out_rows[m.acc_idx] = torch.arange(m.num_pairs, device=dev) - m.acc_bounds[:-1].index_select(0, col)
    return pad_pairs(m.num_voxels, m.pair_bounds, out_rows, m.pair_in)


def _pad_segments(values: Tensor, bounds: Tensor, pad: int) -> tuple[Tensor, Tensor]:
    """Segments of ``values`` as rows of a [S, P] matrix; also each value's flat position."""
    lens = bounds[1:] - bounds[:-1]
    s = lens.shape[0]
    p = max(int(lens.max()) if s else 0, 1)
    seg = torch.repeat_interleave(torch.arange(s, device=values.device), lens)
    local = torch.arange(values.shape[0], device=values.device) - bounds[:-1].index_select(0, seg)
    flat_pos = seg * p + local
    out = torch.full((s * p,), pad, dtype=torch.long, device=values.device)
    out[flat_pos] = values
    return out.view(s, p), flat_pos


def pad_down(fine_rows: Tensor, parent_rows: Tensor, slot_bounds: Tensor, n_fine: int, n_coarse: int) -> PaddedDown:
    """The padded layout of k2 s2 pairs grouped by child slot (slot ``a`` = pairs
    ``slot_bounds[a]:slot_bounds[a+1]``), every fine row once."""
    fine, flat_pos = _pad_segments(fine_rows, slot_bounds, 0)
    parent, _ = _pad_segments(parent_rows, slot_bounds, 0)
    dev = fine_rows.device
    slot = torch.repeat_interleave(torch.arange(8, device=dev), slot_bounds[1:] - slot_bounds[:-1])
    child = torch.full((8, n_coarse), fine.numel(), dtype=torch.long, device=dev)  # pad: past the results
    child[slot, parent_rows] = flat_pos
    inv = torch.empty(n_fine, dtype=torch.long, device=dev)
    inv[fine_rows] = flat_pos
    return PaddedDown(fine, parent, child, inv)


def padded_tensors(maps: KernelMaps) -> list[Tensor]:
    """Graph inputs of an exported network, in :func:`padded_input_names` order."""
    out: list[Tensor] = []
    for s in range(maps.num_levels):
        p = pad_subm(maps.subm[s][maps.primary_kernel])
        out += [*p.pidx, *p.poff, *p.ptable]
    for s, d in enumerate(maps.down):
        p = pad_down(d.fine_idx, d.parent_idx, d.slot_bounds, maps.coords[s].shape[0], maps.coords[s + 1].shape[0])
        out += [p.fine, p.parent, p.child, p.inv]
    return out


def padded_tensors_from_tables(maps: TableMaps) -> tuple[list[Tensor], Tensor]:
    """:func:`padded_tensors` from the fused kernels' neighbour tables (:mod:`.native`; built in a
    few ms, against tens of ms for :class:`KernelMaps`), and the level-0 rank of every row: the
    tables keep voxelize's row order, the graph runs in the level order (``feats[order]``, where
    ``order[rank] = arange``)."""
    if maps.primary_kernel != 3:
        raise ValueError("exported networks use 3x3x3 submanifold kernels only")
    out: list[Tensor] = []
    ranks: list[Tensor] = []
    for s in range(maps.num_levels):
        pairs = maps.subm_map(s).pairs
        n, k = pairs.num_rows, pairs.num_offsets
        a, b = pairs.k_ptr[k // 2].item(), pairs.k_ptr[k // 2 + 1].item()  # the centre offset's pairs
        o = torch.cat([pairs.p_out[:a], pairs.p_out[b:]]).long()
        i = torch.cat([pairs.p_in[:a], pairs.p_in[b:]]).long()
        bounds = torch.cat([pairs.k_ptr[: k // 2 + 1], pairs.k_ptr[k // 2 + 2 :] - (b - a)])
        # level order: rows sorted by neighbour count, descending (stable: ties keep key order)
        order = torch.argsort(torch.bincount(o, minlength=n).neg_(), stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n)
        p = pad_pairs(n, bounds, rank.index_select(0, o), rank.index_select(0, i))
        out += [*p.pidx, *p.poff, *p.ptable]
        ranks.append(rank)
    for s, d in enumerate(maps.down):
        c = d.child  # output = coarse parent, input = fine child, grouped by slot
        fine, parent = ranks[s].index_select(0, c.p_in.long()), ranks[s + 1].index_select(0, c.p_out.long())
        p = pad_down(fine, parent, c.k_ptr, ranks[s].shape[0], ranks[s + 1].shape[0])
        out += [p.fine, p.parent, p.child, p.inv]
    return out, ranks[0]


def padded_input_names(num_levels: int) -> list[str]:
    names = [f"subm{s}_{n}" for s in range(num_levels) for n in padded_subm_inputs()]
    names += [f"down{s}_{n}" for s in range(num_levels - 1) for n in PADDED_DOWN_INPUTS]
    return names


@dataclass(eq=False)
class PaddedMaps:
    """What an exported network reads; built from :func:`padded_tensors`."""

    subm: list[PaddedSubm]
    down: list[PaddedDown]

    @classmethod
    def from_flat(cls, tensors: list[Tensor], num_levels: int) -> PaddedMaps:
        it = iter(tensors)
        g, b = OFFSET_GROUPS, ROW_BUCKETS
        subm = []
        for _ in range(num_levels):
            t = [next(it) for _ in range(2 * g + b)]
            subm.append(PaddedSubm(t[:g], t[g : 2 * g], t[2 * g :]))
        down = [PaddedDown(next(it), next(it), next(it), next(it)) for _ in range(num_levels - 1)]
        return cls(subm, down)

    def subm_map(self, level: int, kernel_size: int | None = None) -> PaddedSubm:
        if kernel_size not in (None, 3):
            raise ValueError("exported networks use 3x3x3 submanifold kernels only")
        return self.subm[level]
