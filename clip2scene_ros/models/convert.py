"""Import SpVNAS/torchsparse MinkUNet and SPVCNN state dicts (``core/models/semantic_kitti/``).

Key layout of that network: ``stem.{0,3}.kernel`` + ``stem.{1,4}`` BatchNorm; ``stage<i>.0.net``
(k2s2 conv + BN) then residual blocks ``stage<i>.<j>.net.{0,1,3,4}`` with an optional
``downsample.{0,1}`` (1x1 conv + BN); ``up<i>.0.net`` (transposed k2s2 + BN) then
``up<i>.1.<j>`` blocks; ``classifier.0`` (Linear); SPVCNN adds ``point_transforms.<i>.{0,1}``
(Linear + BN). Odd kernels are re-ordered from torchsparse's
x-fastest offsets; 2x2x2 kernels are already row-major (see the sparse-conv doc, section 1).
Checked against torchsparse 1.4 itself (``tests/models/test_torchsparse_interop.py``): the same
weights give the same per-point outputs on real frames within 1e-4.

:func:`convert_torchsparse_checkpoint` turns a ``.pth`` file into our safetensors checkpoint
(``clip2scene convert-torchsparse``): widths, depths, input channels and classes are read from the
tensor shapes, so only what the weights cannot tell (voxel size, input feature names) is asked for.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import Tensor

from clip2scene_ros.sparse import from_torchsparse, to_torchsparse

from .minkunet import BasicBlock, ConvBN, MinkUNet, ModelConfig

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
    for i in range(len(getattr(model, "point_transforms", []))):
        out.append((f"point_transforms.{i}.0.weight", f"point_transforms.{i}.linear.weight", "copy"))
        out.append((f"point_transforms.{i}.0.bias", f"point_transforms.{i}.linear.bias", "copy"))
        out += [(f"point_transforms.{i}.1.{k}", f"point_transforms.{i}.bn.{k}", "bn") for k in _BN_KEYS]
    out.append(("classifier.0.weight", f"heads.{head}.weight", "copy"))
    out.append(("classifier.0.bias", f"heads.{head}.bias", "copy"))
    return out


def import_torchsparse(model: MinkUNet, state: dict[str, Tensor], head: str | None = None) -> MinkUNet:
    """Load an SpVNAS MinkUNet/SPVCNN state dict into ``model`` (same widths; ``classifier`` -> ``head``)."""
    if model.bn_folded:
        raise ValueError("import into an unfolded model (create_model(...)); fold_bn() afterwards")
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


def export_torchsparse(model: MinkUNet, head: str | None = None) -> dict[str, Tensor]:
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


# state-dict containers seen in torchsparse-based training code (SpVNAS, SLidR, CLIP2Scene)
_STATE_KEYS = ("model_points", "state_dict", "model", "net", "model_state_dict")
# input channels -> feature names when the checkpoint does not say (SpVNAS: x, y, z, remission)
_DEFAULT_FEATURES = {1: ["intensity"], 3: ["x", "y", "z"], 4: ["x", "y", "z", "intensity"]}


def load_torchsparse_state(path: str | Path) -> dict[str, Tensor]:
    """The network weights of a torchsparse ``.pth`` checkpoint, loaded without running pickled code.

    ``torch.load(weights_only=True)`` refuses arbitrary objects, so an untrusted file cannot execute
    anything; the state dict may be nested under ``model_points``, ``state_dict``, ``model``, ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is reported the same way
        raise ValueError(
            f"{path}: not loadable as plain tensors ({type(e).__name__}: {e}); only state dicts of tensors "
            "are accepted (re-save it with torch.save(model.state_dict(), ...) where it was trained)"
        ) from None
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _STATE_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: no state dict of tensors found (looked under {', '.join(_STATE_KEYS)})")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}


def _count(state: dict[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def config_from_torchsparse(
    state: dict[str, Tensor],
    voxel_size: float,
    in_features: list[str] | None = None,
    head: str = "global",
    name: str = "torchsparse",
) -> ModelConfig:
    """A :class:`ModelConfig` that fits an SpVNAS-layout MinkUNet/SPVCNN state dict."""
    if "stem.0.kernel" not in state or "classifier.0.weight" not in state:
        raise ValueError(
            "not an SpVNAS/CLIP2Scene MinkUNet or SPVCNN state dict: stem.0.kernel and classifier.0.weight are "
            f"missing (first keys: {sorted(state)[:5]})"
        )
    stem = state["stem.0.kernel"]
    cin, stem_channels = int(stem.shape[-2]), int(stem.shape[-1])
    kernel = round(stem.shape[0] ** (1 / 3)) if stem.ndim == 3 else 1
    enc = [int(state[f"stage{i}.1.net.0.kernel"].shape[-1]) for i in range(1, 5)]
    dec = [int(state[f"up{i}.0.net.0.kernel"].shape[-1]) for i in range(1, 5)]
    layers = [_count(state, rf"stage{i}\.([1-9]\d*)\.net\.") for i in range(1, 5)]
    layers += [_count(state, rf"up{i}\.1\.(\d+)\.net\.") for i in range(1, 5)]
    if in_features is None:
        if cin not in _DEFAULT_FEATURES:
            raise ValueError(f"the network reads {cin} input channels: name them (in_features / --in-features)")
        in_features = _DEFAULT_FEATURES[cin]
    if len(in_features) != cin:
        raise ValueError(f"the network reads {cin} input channels but {len(in_features)} features were named")
    return ModelConfig(
        name=name,
        arch="spvcnn" if any(k.startswith("point_transforms.") for k in state) else "minkunet",
        layers=layers,
        stem_channels=stem_channels,
        stem_kernel=kernel,
        encoder_channels=enc,
        decoder_channels=dec,
        in_features=list(in_features),
        heads=[head],
        embed_dim=int(state["classifier.0.weight"].shape[0]),
        voxel_size=voxel_size,
    )


def convert_torchsparse_checkpoint(
    path: str | Path,
    out_dir: str | Path,
    voxel_size: float,
    in_features: list[str] | None = None,
    head: str = "global",
) -> Path:
    """``.pth`` (SpVNAS/CLIP2Scene MinkUNet or SPVCNN, torchsparse 1.x) -> our checkpoint directory."""
    from .registry import create_model, save_checkpoint

    path = Path(path)
    state = load_torchsparse_state(path)
    config = config_from_torchsparse(state, voxel_size, in_features, head, name=path.stem)
    model = import_torchsparse(create_model(config), state, head)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return save_checkpoint(out_dir, model, extra={"converted_from": {"torchsparse": path.name, "sha256": digest}})


# earlier names (MinkUNet only)
import_torchsparse_minkunet = import_torchsparse
export_torchsparse_minkunet = export_torchsparse
