"""Weight converters from spconv and torchsparse layouts to ours, ``W : [K, C_in, C_out]``.

Our offsets are row-major over (x, y, z) with the first axis slowest (spconv's KRSC order), so
spconv weights only move the channel axes. torchsparse stores odd kernels with x fastest and even
(2x2x2) kernels row-major; its 1x1x1 convolutions are 2-D ``[C_in, C_out]``.
"""

from __future__ import annotations

from torch import Tensor


def from_spconv(weight: Tensor) -> Tensor:
    """spconv 2.x KRSC ``[C_out, k0, k1, k2, C_in]`` -> ``[K, C_in, C_out]`` (subm, conv, inverse)."""
    if weight.ndim != 5:
        raise ValueError(
            f"spconv 2.x weights are 5-D [C_out, k, k, k, C_in], got shape {tuple(weight.shape)}; "
            "spconv 1.x checkpoints are [k, k, k, C_in, C_out]: use from_spconv1"
        )
    cout, k0, k1, k2, cin = weight.shape
    return weight.permute(1, 2, 3, 4, 0).reshape(k0 * k1 * k2, cin, cout).contiguous()


def from_spconv1(weight: Tensor) -> Tensor:
    """spconv 1.x RSCK ``[k0, k1, k2, C_in, C_out]`` -> ``[K, C_in, C_out]``."""
    k0, k1, k2, cin, cout = weight.shape
    return weight.reshape(k0 * k1 * k2, cin, cout).contiguous()


def to_spconv(weight: Tensor) -> Tensor:
    """``[K, C_in, C_out]`` -> spconv 2.x KRSC ``[C_out, k, k, k, C_in]`` (cubic kernels)."""
    k, cin, cout = weight.shape
    side = round(k ** (1 / 3))
    if side**3 != k:
        raise ValueError(f"{k} offsets is not a cubic kernel")
    return weight.reshape(side, side, side, cin, cout).permute(4, 0, 1, 2, 3).contiguous()


def from_torchsparse(weight: Tensor, kernel_size: int | None = None) -> Tensor:
    """torchsparse ``[K, C_in, C_out]`` (or ``[C_in, C_out]`` for 1x1x1) -> ours.

    Odd kernels are stored with x fastest (``k = (iz*Ky + iy)*Kx + ix``); even kernels are already
    row-major (``k = (ix*Ky + iy)*Kz + iz``) and pass through unchanged.
    """
    if weight.ndim == 2:
        return weight[None].contiguous()
    if weight.ndim != 3:
        raise ValueError(f"torchsparse weights are [K, C_in, C_out], got shape {tuple(weight.shape)}")
    k, cin, cout = weight.shape
    side = round(k ** (1 / 3)) if kernel_size is None else kernel_size
    if side**3 != k:
        raise ValueError(f"{k} offsets does not match kernel size {side}")
    if side % 2 == 0:
        return weight.contiguous()
    return weight.reshape(side, side, side, cin, cout).permute(2, 1, 0, 3, 4).reshape(k, cin, cout).contiguous()


def to_torchsparse(weight: Tensor) -> Tensor:
    """Inverse of :func:`from_torchsparse` for cubic kernels."""
    k, cin, cout = weight.shape
    side = round(k ** (1 / 3))
    if side % 2 == 0:
        return weight.contiguous()
    return weight.reshape(side, side, side, cin, cout).permute(2, 1, 0, 3, 4).reshape(k, cin, cout).contiguous()


__all__ = ["from_spconv", "from_spconv1", "from_torchsparse", "to_spconv", "to_torchsparse"]
