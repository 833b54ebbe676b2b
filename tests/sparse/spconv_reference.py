"""spconv 2.x CPU as the numerical oracle: the same MinkUNet, weights converted to spconv's layout.

spconv's CPU scatter-add races above one thread, so callers pin ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from clip2scene_ros.models.minkunet import BasicBlock, ConvBN, MinkUNet, Pointwise
from clip2scene_ros.sparse import to_spconv

spconv = __import__("pytest").importorskip("spconv.pytorch")


def shifted_coords(coords: Tensor, multiple: int = 64) -> tuple[Tensor, list[int]]:
    """spconv needs non-negative coordinates: shift by a multiple of 2**levels (keeps parity)."""
    c = coords.clone()
    lo = c[:, 1:].min(0).values
    shift = (-torch.div(lo, multiple, rounding_mode="floor")) * multiple
    c[:, 1:] += shift
    shape = (c[:, 1:].max(0).values + multiple).tolist()
    return c.int(), shape


def _conv(layer, st, key: str, kind: str):
    w = layer.weight.detach()
    k, cin, cout = w.shape
    if kind == "subm":
        conv = spconv.SubMConv3d(cin, cout, round(k ** (1 / 3)), bias=False, indice_key=key)
    elif kind == "down":
        conv = spconv.SparseConv3d(cin, cout, 2, 2, bias=False, indice_key=key)
    else:
        conv = spconv.SparseInverseConv3d(cin, cout, 2, bias=False, indice_key=key)
    conv.weight.data.copy_(to_spconv(w))
    out = conv(st)
    if layer.bias is not None:
        out = out.replace_feature(out.features + layer.bias.detach())
    return out


def _convbn(cb: ConvBN, st, key: str, kind: str, relu: bool):
    if isinstance(cb.conv, Pointwise):
        f = st.features @ cb.conv.weight[0].detach()
        if cb.conv.bias is not None:
            f = f + cb.conv.bias.detach()
        out = st.replace_feature(f)
    else:
        out = _conv(cb.conv, st, key, kind)
    f = out.features if isinstance(cb.bn, torch.nn.Identity) else cb.bn(out.features)
    return out.replace_feature(torch.relu(f) if relu else f)


def _block(b: BasicBlock, st, level: int):
    y = _convbn(b.conv1, st, f"subm{level}", "subm", True)
    y = _convbn(b.conv2, y, f"subm{level}", "subm", False)
    s = st if b.shortcut is None else _convbn(b.shortcut, st, "", "pw", False)
    return y.replace_feature(torch.relu(y.features + s.features))


@torch.no_grad()
def spconv_minkunet(model: MinkUNet, coords: Tensor, feats: Tensor, batch_size: int = 1) -> dict[str, Tensor]:
    """Run ``model``'s weights through spconv; rows follow ``coords`` (any order, any sign)."""
    c, shape = shifted_coords(coords)
    st = spconv.SparseConvTensor(feats, c, shape, batch_size)
    for cb in model.stem:
        st = _convbn(cb, st, f"stem{cb.conv.kernel_size}", "subm", True)
    skips = [st]
    for i, (down, blocks) in enumerate(zip(model.down, model.enc_blocks)):
        st = _convbn(down, st, f"down{i}", "down", True)
        for b in blocks:
            st = _block(b, st, i + 1)
        skips.append(st)
    for i, (up, blocks) in enumerate(zip(model.up, model.dec_blocks)):
        level = 3 - i
        st = _convbn(up, st, f"down{level}", "up", True)
        st = st.replace_feature(torch.cat([st.features, skips[level].features], 1))
        for b in blocks:
            st = _block(b, st, level)
    assert torch.equal(st.indices, c), "spconv's inverse convolutions did not restore the input order"
    return {name: head(st.features) for name, head in model.heads.items()}
