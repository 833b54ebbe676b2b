"""Sparse convolutions as gather + matmul over precomputed kernel maps (scatter-free).

Weights are stored as ``[K, C_in, C_out]`` with offsets row-major over (x, y, z) (see
:func:`.kmap.kernel_offsets`); ``out[o] = sum_k W[k]^T in[nbr(o, k)]`` (cross-correlation).

Per offset only the rows that really have a neighbour are gathered and multiplied (a compact
matmul), so the cost follows the neighbour count. The per-offset results are added back by
gathering them through an index (no scatter/index_add, which exports wrongly to ONNX): eagerly as
in-place adds on row prefixes, in a traced graph as a chain of Gather/Concat/Add over the same
prefixes. Reduced precision (bf16/fp16 features and weights) accumulates in fp32 and returns the
input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import native
from .kmap import DownMap, KernelMaps, PaddedDown, PaddedMaps, PaddedSubm, SubmMap, dyn_slice, gather_sum, is_tracing
from .native import DownTable, SubmTable, TableMaps

AnySubm = SubmMap | PaddedSubm | SubmTable
AnyDown = DownMap | PaddedDown | DownTable
AnyMaps = KernelMaps | PaddedMaps | TableMaps


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype


def _finish(out: Tensor, bias: Tensor | None, relu: bool, dtype: torch.dtype) -> Tensor:
    if not out.requires_grad and not is_tracing():  # inference: one pass, in place
        if bias is not None:
            out.add_(bias.to(out.dtype))
        if relu:
            out.relu_()
        return out.to(dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    if relu:
        out = torch.relu(out)
    return out.to(dtype)


def _per_offset(x: Tensor, weights: list[Tensor], segs: list[Tensor], cout: int) -> Tensor:
    """Concatenated ``x[seg_i] @ W_i`` over offsets, plus one zero row at the end."""
    if is_tracing():
        ys = [x.index_select(0, seg) @ w for seg, w in zip(segs, weights)]
        return torch.cat([*ys, x.new_zeros((1, cout))], 0)
    if torch.is_grad_enabled() and (x.requires_grad or weights[0].requires_grad):
        # Training: one gather for all offsets, so the backward is one index_add rather than a
        # full-size zero fill + scatter per offset (which dominated CPU training time).
        xg = x.index_select(0, torch.cat(list(segs)))
        ys = [part @ w for part, w in zip(torch.split(xg, [int(q.shape[0]) for q in segs]), weights)]
        return torch.cat([*ys, x.new_zeros((1, cout))], 0)
    # inference: one gather for all offsets, each offset's matmul written into its slice
    sizes = [int(q.shape[0]) for q in segs]
    total = sum(sizes)
    xg = x.index_select(0, torch.cat(list(segs)))
    ycat = x.new_empty((total + 1, cout))
    ycat[total].zero_()
    start = 0
    for n, w in zip(sizes, weights):
        if n:
            torch.mm(xg[start : start + n], w, out=ycat[start : start + n])
        start += n
    return ycat


# Largest x @ W_cat product (elements) the matmul-first form writes; beyond it the [N, K*C_out]
# product no longer stays in cache and the per-offset form wins.
MATMUL_FIRST_MAX_ELEMENTS = 8 << 20


def _matmul_first(x: Tensor, weight: Tensor, m: SubmMap) -> bool:
    """Whether a submanifold layer runs matmul-first: reduced precision on CPU, inference only.

    With native bf16 (AMX) one [N, C_in] x [C_in, K*C_out] matmul over every offset costs less
    than 26 small per-offset matmuls, although it computes products no neighbour uses; fp32 has
    no such margin (it was 2-10x slower in every layer measured), so it stays per offset.
    """
    if x.dtype != torch.bfloat16 or x.device.type != "cpu" or torch.is_grad_enabled():
        return False
    return x.shape[0] * weight.shape[0] * weight.shape[2] <= MATMUL_FIRST_MAX_ELEMENTS


def _subm_matmul_first(x: Tensor, w: Tensor, m: SubmMap) -> Tensor:
    """``out[o] = sum over (i, k) of (x @ W_cat)[i, k]``: one matmul, then one gather-sum per row."""
    k, cin, cout = w.shape
    y = torch.mm(x, w.permute(1, 0, 2).reshape(cin, k * cout)).view(-1, cout)
    flat, starts = m.bag()
    return nn.functional.embedding_bag(flat, y, starts, mode="sum")


# fp32 inference layers gather once and sum per row with embedding_bag (fewer, larger ops)
FP32_BAGGED = True


def _subm_bagged(x: Tensor, weights: list[Tensor], m: SubmMap) -> Tensor:
    """Neighbour sum of a submanifold layer in a few large ops (fp32 CPU inference): one gather of
    every pair's input row, one matmul per offset into its slice, one gather-sum per output row."""
    cout = weights[0].shape[1]
    xg = x.index_select(0, m.pair_in)
    y = x.new_empty((m.num_pairs, cout))
    bounds = m.pair_bounds.tolist()
    for i, w in enumerate(weights):
        if bounds[i + 1] > bounds[i]:
            torch.mm(xg[bounds[i] : bounds[i + 1]], w, out=y[bounds[i] : bounds[i + 1]])
    flat, starts = m.pair_bags()
    return nn.functional.embedding_bag(flat, y, starts, mode="sum")


def _with_zero_row(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros((1, x.shape[1]))], 0)


def _subm_padded(x: Tensor, weight: Tensor, bias: Tensor | None, m: PaddedSubm, relu: bool) -> Tensor:
    k, _, cout = weight.shape
    c = k // 2
    w = weight.to(x.dtype)
    w_nc = torch.cat([w[:c], w[c + 1 :]], 0)  # [K-1, C_in, C_out]
    # per offset group: [K_g, P_g, C_in] x [K_g, C_in, C_out], flattened to rows; padded slots
    # read row 0 and are never read back
    ys = [torch.matmul(x[idx], w_nc[off]).reshape(-1, cout) for idx, off in zip(m.pidx, m.poff)]
    y = torch.cat([*ys, x.new_zeros((1, cout))], 0)
    acc_t = _acc_dtype(x)
    acc = torch.cat([gather_sum(y.to(acc_t), t) for t in m.ptable], 0)  # row buckets, in row order
    if acc_t == x.dtype:  # the centre offset and the neighbour sum in one Gemm
        out = torch.addmm(acc, x, w[c])
    else:
        out = (x @ w[c]).to(acc_t) + acc
    return _finish(out, bias, relu, x.dtype)


def subm_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    m: AnySubm,
    relu: bool = False,
    acc_out: bool = False,
    residual: Tensor | None = None,
) -> Tensor:
    """Submanifold convolution (odd kernel, stride 1): ``x`` [N, C_in] in level order.

    With ``acc_out`` a bf16/fp16 input returns the fp32 accumulator instead of casting back.
    ``residual`` [N, C_out] is added before the ReLU.

    ``m`` is a :class:`SubmMap` (exact sparse cost; eager), a ``PaddedSubm`` (exported graphs) or
    a :class:`.native.SubmTable` (fused fp32 CPU kernels; differentiable).
    """
    if isinstance(m, SubmTable):
        return native.pair_conv(x, weight, m.pairs, bias, relu, residual, transpose=(m.pairs, True))
    if residual is not None:
        out = subm_conv(x, weight, bias, m, False, True)
        out = out + residual.to(out.dtype)
        return torch.relu(out) if relu else out
    if isinstance(m, PaddedSubm):
        return _subm_padded(x, weight, bias, m, relu)
    out_dtype = _acc_dtype(x) if acc_out else x.dtype
    k, cin, cout = weight.shape
    if k != m.kernel_size**3 and m.kernel_size > 0:
        raise ValueError(f"weight has {k} offsets but the map is for kernel {m.kernel_size}")
    if x.shape[1] != cin:
        raise ValueError(f"input has {x.shape[1]} channels, the layer expects {cin}")
    c = k // 2
    w = weight.to(x.dtype)
    acc_t = _acc_dtype(x)
    if not is_tracing() and _matmul_first(x, weight, m):
        out = _subm_matmul_first(x, w, m).to(acc_t)
        return _finish(out, bias, relu, out_dtype)
    if FP32_BAGGED and not is_tracing() and not torch.is_grad_enabled() and x.dtype == torch.float32:
        out = (x @ w[c]).add_(_subm_bagged(x, [w[i] for i in range(k) if i != c], m))
        return _finish(out, bias, relu, out_dtype)
    out = (x @ w[c]).to(acc_t)
    weights = [w[i] for i in range(k) if i != c]
    ycat = _per_offset(x, weights, m.pair_segments(), cout)
    segs = m.acc_segments()
    if is_tracing():
        lens = m.acc_lengths()
        zeros = torch.zeros_like(out)
        acc = None
        for j in range(len(segs) - 1, -1, -1):
            g = ycat.index_select(0, segs[j]).to(acc_t)
            if acc is None:
                acc = g
            else:
                acc = g + torch.cat([acc, dyn_slice(zeros, lens[j + 1], lens[j])], 0)
        n0 = torch._shape_as_tensor(out)[0]
        full = torch.cat([acc, dyn_slice(zeros, lens[0], n0)], 0)
        if m.row_rank is not None:
            full = full.index_select(0, m.row_rank)
        out = out + full
    else:
        lens = m.acc_lengths()
        if out.requires_grad or ycat.requires_grad:
            # Training: one gather + one index_add (eager only; never exported) instead of a
            # prefix add per segment, whose backward zero-fills all of ycat once per segment.
            used = [(seg, int(n)) for seg, n in zip(segs, lens) if int(n) > 0]
            acc = torch.zeros_like(out)
            if used:
                rows = torch.cat([torch.arange(n, device=out.device) for _, n in used])
                acc = acc.index_add(0, rows, ycat.index_select(0, torch.cat([q for q, _ in used])).to(acc_t))
            out = out + (acc if m.row_rank is None else acc.index_select(0, m.row_rank))
        else:
            target = out if m.row_rank is None else torch.zeros_like(out)
            for seg, n in zip(segs, lens):
                if n == 0:
                    break  # lengths are non-increasing
                target[:n] += ycat.index_select(0, seg)
            out = target if m.row_rank is None else out + target.index_select(0, m.row_rank)
    return _finish(out, bias, relu, out_dtype)


def down_conv(x: Tensor, weight: Tensor, bias: Tensor | None, m: AnyDown, relu: bool = False) -> Tensor:
    """k2 s2 convolution from a fine level to the next coarser one: [N_f, C_in] -> [N_c, C_out]."""
    if isinstance(m, DownTable):
        return native.pair_conv(x, weight, m.child, bias, relu, transpose=(m.up, False))
    _, cin, cout = weight.shape
    if isinstance(m, PaddedDown):
        y = torch.matmul(x[m.fine], weight.to(x.dtype)).reshape(-1, cout)
        out = gather_sum(_with_zero_row(y).to(_acc_dtype(x)), m.child)
        return _finish(out, bias, relu, x.dtype)
    if x.shape[1] != cin:
        raise ValueError(f"input has {x.shape[1]} channels, the layer expects {cin}")
    w = weight.to(x.dtype)
    ycat = _per_offset(x, [w[a] for a in range(8)], m.fine_segments(), cout)
    acc_t = _acc_dtype(x)
    if ycat.requires_grad and not is_tracing():  # training: one gather, one index_add in backward
        n_c = m.child_table.shape[0]
        out = ycat.index_select(0, m.child_table.T.reshape(-1)).view(8, n_c, cout).to(acc_t).sum(0)
        return _finish(out, bias, relu, x.dtype)
    n_c = m.child_table.shape[0]
    out = ycat.index_select(0, m.child_table.reshape(-1)).view(n_c, 8, cout).to(acc_t).sum(1)
    return _finish(out, bias, relu, x.dtype)


def up_conv(x: Tensor, weight: Tensor, bias: Tensor | None, m: AnyDown, relu: bool = False) -> Tensor:
    """Transposed k2 s2 convolution back to the fine level the map came from (same coordinates)."""
    if isinstance(m, DownTable):
        return native.pair_conv(x, weight, m.up, bias, relu, transpose=(m.child, False))
    _, cin, cout = weight.shape
    if isinstance(m, PaddedDown):
        y = torch.matmul(x[m.parent], weight.to(x.dtype)).reshape(-1, cout)
        return _finish(y[m.inv].to(_acc_dtype(x)), bias, relu, x.dtype)
    if x.shape[1] != cin:
        raise ValueError(f"input has {x.shape[1]} channels, the layer expects {cin}")
    w = weight.to(x.dtype)
    ycat = _per_offset(x, [w[a] for a in range(8)], m.parent_segments(), cout)
    out = ycat.index_select(0, m.inv).to(_acc_dtype(x))
    return _finish(out, bias, relu, x.dtype)


class _SparseConvBase(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_offsets: int, bias: bool) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(num_offsets, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # Kaiming-uniform over the real fan-in (offsets x input channels).
        bound = math.sqrt(6.0 / (num_offsets * in_channels)) if in_channels else 0.0
        nn.init.uniform_(self.weight, -bound, bound)


class SubmConv3d(_SparseConvBase):
    """Submanifold convolution with an odd kernel; uses the level's map for its kernel size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"SubmConv3d needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size**3, bias)
        self.kernel_size = kernel_size

    def forward(
        self,
        x: Tensor,
        maps: AnyMaps,
        level: int,
        relu: bool = False,
        acc_out: bool = False,
        residual: Tensor | None = None,
    ) -> Tensor:
        """``acc_out``: return the fp32 accumulator for bf16/fp16 input; ``residual``: added before the ReLU."""
        m = maps.subm_map(level, self.kernel_size)
        return subm_conv(x, self.weight, self.bias, m, relu, acc_out, residual)


class DownConv3d(_SparseConvBase):
    """Convolution with kernel 2, stride 2 (level -> level + 1)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, 8, bias)

    def forward(self, x: Tensor, maps: AnyMaps, level: int, relu: bool = False) -> Tensor:
        return down_conv(x, self.weight, self.bias, maps.down[level], relu)


class UpConv3d(_SparseConvBase):
    """Transposed convolution with kernel 2, stride 2 (level + 1 -> level, encoder coordinates)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, 8, bias)

    def forward(self, x: Tensor, maps: AnyMaps, level: int, relu: bool = False) -> Tensor:
        return up_conv(x, self.weight, self.bias, maps.down[level], relu)
