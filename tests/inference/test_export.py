"""ONNX export (`clip2scene export`), ONNX Runtime vs eager, backends, TensorRT guard."""

import json

import numpy as np
import pytest
import torch

from clip2scene_ros.cli.main import main
from clip2scene_ros.inference.backends import create_backend
from clip2scene_ros.inference.export import TENSORRT_OPS, example_points, graph_ops, read_sidecar
from clip2scene_ros.inference.tensorrt import TensorRTOptions, TensorRTUnavailable, profile_shapes, tensorrt_status
from clip2scene_ros.models import create_model, save_checkpoint
from clip2scene_ros.models.inputs import encode_points, prepare_graph_inputs, prepare_inputs
from clip2scene_ros.sparse import native
from clip2scene_ros.sparse.kmap import OFFSET_GROUPS, ROW_BUCKETS

# Small but complete: every layer type, 5 levels, 2 heads.
SMALL = dict(width=0.125, layers=[1, 1, 1, 1, 1, 1, 1, 1], embed_dim=16, voxel_size=0.2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = create_model("minkunet18", **SMALL).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding matters
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    ckpt = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(ckpt, model)
    assert main(["export", str(ckpt)]) == 0
    return ckpt, ckpt / "model.onnx", model


def test_graph_uses_only_tensorrt_supported_operators(exported):
    _, onnx_path, _ = exported
    import onnx

    onnx.checker.check_model(str(onnx_path))
    ops = graph_ops(onnx_path)
    assert ops <= TENSORRT_OPS, f"operators TensorRT does not import: {ops - TENSORRT_OPS}"
    assert {"Gather", "MatMul", "Concat", "Relu"} <= ops
    # neighbour sums are a MatMul with a row of ones: ONNX Runtime's ReduceSum is 3-7x slower here
    assert "ReduceSum" not in ops
    assert not {"ScatterElements", "ScatterND", "Unique", "NonZero", "TopK", "Loop"} & ops
    model = onnx.load(str(onnx_path))
    assert model.opset_import[0].version == 17
    feats = model.graph.input[0]
    assert feats.name == "feats" and feats.type.tensor_type.shape.dim[0].dim_param == "n0"
    meta = read_sidecar(onnx_path)
    assert (
        meta["outputs"] == ["global", "local"]
        and len(meta["inputs"]) == 1 + 5 * (2 * OFFSET_GROUPS + ROW_BUCKETS) + 4 * 4
    )


@pytest.mark.parametrize("route", ["kernel_maps", "fused_tables"])
def test_onnxruntime_equals_eager_at_three_voxel_counts(exported, route):
    """Both ways of building the graph's padded maps (from KernelMaps; from the fused kernels'
    neighbour tables, what the backends use where g++ built them) give the eager outputs."""
    ckpt, onnx_path, model = exported
    import onnxruntime as ort

    if route == "fused_tables" and not native.available():
        pytest.skip("the fused CPU kernels are not built on this machine (no g++)")
    prepare = prepare_inputs if route == "kernel_maps" else prepare_graph_inputs
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    counts = set()
    # a few points: coarse levels of one voxel, empty offset groups and row buckets
    for pts in (example_points(None, seed=11), example_points(3000, seed=12), example_points(4, seed=15)):
        prep = prepare(model.config, pts)
        counts.add(prep.num_voxels)
        got = dict(zip(["global", "local"], sess.run(None, prep.feeds())))
        with torch.no_grad():
            ref = encode_points(model, [torch.from_numpy(pts)])[0]  # unfolded BN, eager
        for h in got:
            voxel_ref = np.zeros_like(got[h])
            voxel_ref[prep.point_rows] = ref[h].numpy()
            assert np.abs(got[h] - voxel_ref).max() < 1e-4
            assert np.abs(got[h]).mean() > 1e-3
    assert len(counts) == 3
    empty = prepare(model.config, np.full((5, 4), np.nan, np.float32))
    assert empty.num_voxels == 0 and (empty.point_rows == -1).all()


def test_backends_agree_per_point_and_bf16_keeps_labels(exported):
    ckpt, _, _ = exported
    pts = example_points(None, seed=13)
    pts[5] = np.nan
    outs = {kind: create_backend(kind, ckpt)(pts) for kind in ("torch", "onnxruntime")}
    for h in ("global", "local"):
        a, b = outs["torch"][h], outs["onnxruntime"][h]
        assert a.shape == (len(pts), 16) and a.dtype == np.float32
        assert np.abs(a - b).max() < 1e-4
        assert not a[5].any()
    bf16 = create_backend("torch", ckpt, precision="bf16")(pts)
    classes = np.random.default_rng(0).normal(size=(16, 10)).astype(np.float32)
    agree = ((outs["torch"]["local"] @ classes).argmax(1) == (bf16["local"] @ classes).argmax(1)).mean()
    rel = np.abs(bf16["local"] - outs["torch"]["local"]).max() / np.abs(outs["torch"]["local"]).max()
    assert agree > 0.97 and rel < 0.05, (agree, rel)
    for kind in ("torch", "onnxruntime"):
        empty = create_backend(kind, ckpt)(np.zeros((0, 4), np.float32))
        assert empty["global"].shape == (0, 16)
        nan_only = create_backend(kind, ckpt)(np.full((3, 4), np.nan, np.float32))
        assert nan_only["global"].shape == (3, 16) and not nan_only["global"].any()


def test_backend_errors_are_clear(exported, tmp_path):
    ckpt, _, _ = exported
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("openvino", ckpt)
    with pytest.raises(ValueError, match="bf16"):
        create_backend("onnxruntime", ckpt, precision="bf16")
    with pytest.raises(ValueError, match="CUDA"):
        create_backend("torch", ckpt, precision="fp16")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        create_backend("torch", tmp_path)
    with pytest.raises(ValueError, match=r"\[P, 4\+\]"):
        create_backend("torch", ckpt)(np.zeros((10, 3), np.float32))


def test_tensorrt_is_guarded_with_a_reason(exported, capsys):
    ckpt, onnx_path, _ = exported
    ok, reason = tensorrt_status()
    opts = TensorRTOptions(min_voxels=100, opt_voxels=2000, max_voxels=40000, build_only=True)
    shapes = profile_shapes(create_model("minkunet18", **SMALL).config, opts)
    assert shapes["dims"]["feats"] == ((100, 1), (2000, 1), (40000, 1))
    assert set(shapes["dims"]) == set(read_sidecar(onnx_path)["inputs"])
    with pytest.raises(ValueError, match="min_voxels"):
        TensorRTOptions(min_voxels=10, opt_voxels=5)
    if not ok:
        assert "CUDA" in reason or "TensorRT" in reason
        with pytest.raises(TensorRTUnavailable, match="use kind='torch' or 'onnxruntime'"):
            create_backend("tensorrt", ckpt, device="cuda", precision="fp16")
        assert main(["export", str(ckpt), "--tensorrt", "--build-only"]) == 3
        assert "unsupported_by_tensorrt" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        pytest.skip(f"TensorRT engine build not tested here: {reason}")
    backend = create_backend("tensorrt", ckpt, device="cuda", precision="fp16")
    ref = create_backend("torch", ckpt)(example_points(None, seed=14))
    got = backend(example_points(None, seed=14))
    assert np.abs(got["local"] - ref["local"]).max() < 5e-2
