"""Import SpVNAS/torchsparse MinkUNet state dicts (``core/models/semantic_kitti/minkunet.py``).

Key layout of that network: ``stem.{0,3}.kernel`` + ``stem.{1,4}`` BatchNorm; ``stage<i>.0.net``
(k2s2 conv + BN) then residual blocks ``stage<i>.<j>.net.{0,1,3,4}`` with an optional
``downsample.{0,1}`` (1x1 conv + BN); ``up<i>.0.net`` (transposed k2s2 + BN) then
``up<i>.1.<j>`` blocks; ``classifier.0`` (Linear). Odd kernels are re-ordered from torchsparse's
x-fastest offsets; 2x2x2 kernels are already row-major (see the sparse-conv doc, section 1).
Verified only as a round trip with our own exporter (:func:`export_torchsparse_minkunet`): no
torchsparse forward can run on CPU-only machines.
"""

from __future__ import annotations

from torch import Tensor

from clip2scene_ros.sparse import from_torchsparse, to_torchsparse

from .minkunet import BasicBlock, ConvBN, MinkUNet

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _pairs(model: MinkUNet, head: str) -> list[tuple[str, str, str]]:
    """(torchsparse key, our key, kind) for every tensor; kind: conv3 / conv2 / pw / bn / copy."""
    out: list[tuple[str, str, str]] = []

    def convbn(ts_conv: str, ts_bn: str, ours: str, cb: ConvBN, kind: str) -> None:
        out.append((f"{ts_conv}.kernel", f"{ours}.conv.weight", kind))
        for k in _BN_KEYS:
            out.append((f"{ts_bn}.{k}", f"{ours}.bn.{k}", "bn"))

    def block(ts: str, ours: str, b: BasicBlock) -> None:
        convbn(f"{ts}.net.0", f"{ts}.net.1", f"{ours}.conv1", b.conv1, "conv3")
        convbn(f"{ts}.net.3", f"{ts}.net.4", f"{ours}.conv2", b.conv2, "conv3")
        if b.shortcut is not None:
            convbn(f"{ts}.downsample.0", f"{ts}.downsample.1", f"{ours}.shortcut", b.shortcut, "pw")

    if len(model.stem) != 2 or model.config.stem_kernel != 3:
        raise ValueError("the SpVNAS layout has a stem of two 3x3x3 convolutions")
    convbn("stem.0", "stem.1", "stem.0", model.stem[0], "conv3")
    convbn("stem.3", "stem.4", "stem.1", model.stem[1], "conv3")
    for i in range(4):
        convbn(f"stage{i + 1}.0.net.0", f"stage{i + 1}.0.net.1", f"down.{i}", model.down[i], "conv2")
        for j, b in enumerate(model.enc_blocks[i]):
            block(f"stage{i + 1}.{j + 1}", f"enc_blocks.{i}.{j}", b)
        convbn(f"up{i + 1}.0.net.0", f"up{i + 1}.0.net.1", f"up.{i}", model.up[i], "conv2")
        for j, b in enumerate(model.dec_blocks[i]):
            block(f"up{i + 1}.1.{j}", f"dec_blocks.{i}.{j}", b)
    out.append(("classifier.0.weight", f"heads.{head}.weight", "copy"))
    out.append(("classifier.0.bias", f"heads.{head}.bias", "copy"))
    return out


def import_torchsparse_minkunet(model: MinkUNet, state: dict[str, Tensor], head: str | None = None) -> MinkUNet:
    """Load an SpVNAS MinkUNet state dict into ``model`` (same widths; ``classifier`` -> ``head``)."""
    head = head or model.config.heads[0]
    if head not in model.heads:
        raise ValueError(f"model has no head {head!r}; heads: {list(model.heads)}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ours = dict(model.state_dict())
    missing = []
    for ts_key, our_key, kind in _pairs(model, head):
        if ts_key not in state:
            if not ts_key.endswith("num_batches_tracked"):
                missing.append(ts_key)
            continue
        v = state[ts_key]
        if kind == "conv3":
            v = from_torchsparse(v, 3)
        elif kind == "pw":
            v = from_torchsparse(v.reshape(v.shape[-2], v.shape[-1]))
        if tuple(v.shape) != tuple(ours[our_key].shape):
            raise ValueError(
                f"{ts_key}: shape {tuple(state[ts_key].shape)} does not fit {our_key} {tuple(ours[our_key].shape)}; "
                "create the model with the checkpoint's width (cr) and class count as embed_dim"
            )
        ours[our_key] = v
    if missing:
        raise KeyError(f"{len(missing)} tensors missing from the torchsparse state dict, e.g. {missing[:3]}")
    model.load_state_dict(ours)
    return model


def export_torchsparse_minkunet(model: MinkUNet, head: str | None = None) -> dict[str, Tensor]:
    """Our weights in the SpVNAS/torchsparse layout (the inverse of the import)."""
    head = head or model.config.heads[0]
    ours = model.state_dict()
    out = {}
    for ts_key, our_key, kind in _pairs(model, head):
        v = ours[our_key]
        if kind == "conv3":
            v = to_torchsparse(v)
        elif kind == "pw":
            v = v[0]
        out[ts_key] = v.clone()
    return out
