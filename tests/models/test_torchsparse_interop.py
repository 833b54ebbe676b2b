"""torchsparse 1.4 as the reference: its MinkUNet/SPVCNN weights imported into our engine give its
per-point outputs on real frames; the point-voxel operators equal spvoxelize/spdevoxelize; a
torchsparse .pth converts with one command into a checkpoint the segmenter runs.

torchsparse takes about 1-5 s per network forward on CPU here, so the frames are cropped and the
networks are a quarter of the SpVNAS widths. Clouds are translated to non-negative coordinates by
whole 16-voxel blocks: torchsparse 1.x truncates coordinates towards zero when down-sampling (its
pipelines shift clouds non-negative) and computes the trilinear weights in those shifted units.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchsparse", reason="torchsparse 1.4 is not installed (scripts/setup.sh installs the wheel "
                    "from ../shared/wheels/torchsparse when present)")  # fmt: skip
sys.path.insert(0, str(Path(__file__).resolve().parent))
from torchsparse_reference import (  # noqa: E402
    PointTensor,
    SparseTensor,
    TorchsparseMinkUNet,
    TorchsparseSPVCNN,
    point_to_voxel,
    randomise,
    run_minkunet,
    run_spvcnn,
    voxel_to_point,
)

from clip2scene_ros.models import create_model, import_torchsparse, prepare_inputs  # noqa: E402
from clip2scene_ros.sparse import voxelize  # noqa: E402
from clip2scene_ros.sparse.pointvoxel import devoxelize, voxelize_mean  # noqa: E402
from clip2scene_ros.sparse.samples import crop, lidar_like_scene, load_real_frame  # noqa: E402

TOL = 1e-4
FRAMES = (("nuscenes", 0.1, 15.0), ("kitti", 0.05, 8.0))  # name, voxel size, crop radius (m)


pytestmark = pytest.mark.usefixtures("one_thread")


def _frame(real_data: Path, name: str, voxel_size: float, radius: float) -> torch.Tensor:
    pts = torch.from_numpy(crop(load_real_frame(real_data, name), radius))
    block = 16 * voxel_size
    pts[:, :3] += block * torch.ceil(-pts[:, :3].min(0).values / block)
    return pts


def _pair(arch: str, seed: int = 0, classes: int = 16):
    torch.manual_seed(seed)
    ours = create_model(arch, width=0.25, embed_dim=classes, heads=["seg"])
    ref_cls = TorchsparseSPVCNN if arch == "spvcnn" else TorchsparseMinkUNet
    ref = randomise(ref_cls(ours.config, classes), seed)
    return import_torchsparse(ours, ref.state_dict()).eval(), ref


def _ours_per_point(model, pts: torch.Tensor, voxel_size: float) -> torch.Tensor:
    with torch.no_grad():
        prep = prepare_inputs(model.config, pts, voxel_size)
        out = model(prep.feats, prep.maps)
    return out["seg"].index_select(0, prep.rows)


@pytest.mark.real_data
def test_minkunet_weights_from_torchsparse_give_its_outputs_on_real_frames(real_data):
    model, ref = _pair("minkunet18")
    folded = create_model(model.config)
    folded.load_state_dict(model.state_dict())
    folded.fold_bn()
    for name, vs, radius in FRAMES:
        pts = _frame(real_data, name, vs, radius)
        vox = voxelize(pts, vs)
        maps = model.build_maps(vox.coords)
        feats = vox.feats.index_select(0, maps.input_order)[:, 3:4]
        expected = run_minkunet(ref, maps.coords[0], feats)[maps.input_rank[vox.point_to_voxel]]
        assert expected.abs().mean() > 0.05, name  # a real signal
        for m in (model, folded):
            assert (_ours_per_point(m, pts, vs) - expected).abs().max() < TOL, name


@pytest.mark.real_data
def test_spvcnn_weights_from_torchsparse_give_its_outputs_on_real_frames(real_data):
    model, ref = _pair("spvcnn", seed=1)
    folded = create_model(model.config)
    folded.load_state_dict(model.state_dict())
    folded.fold_bn()
    for name, vs, radius in FRAMES:
        pts = _frame(real_data, name, vs, radius)
        pos = pts[:, :3] / torch.full((3,), vs)
        expected = run_spvcnn(ref, pos, torch.zeros(len(pts), dtype=torch.long), pts[:, 3:4])
        assert expected.abs().mean() > 0.05, name
        for m in (model, folded):
            assert (_ours_per_point(m, pts, vs) - expected).abs().max() < TOL, name


def _check_point_voxel_ops(pts: torch.Tensor, batch: torch.Tensor, vs: float) -> None:
    model = create_model("spvcnn_tiny")
    vox = voxelize(pts, vs, batch=batch)
    _, maps, rows = model.prepare(pts, vox, vs)
    assert (rows >= 0).all()
    km, pm = maps.kernel, maps.points
    pos = pts[:, :3] / torch.full((3,), vs)
    g = torch.Generator().manual_seed(0)
    for s in (0, 2, 4):
        stride = 1 << s
        c = km.coords[s]
        ts_coords = torch.cat([c[:, 1:] * stride, c[:, :1]], 1).int()  # (x, y, z, batch) in level-0 units
        voxel_feats = torch.randn(len(c), 6, generator=g)
        z = PointTensor(torch.randn(len(pts), 6, generator=g), torch.cat([pos, batch[:, None].float()], 1))
        z.additional_features = {"idx_query": {}, "counts": {}}
        x = SparseTensor(voxel_feats, ts_coords, stride)
        assert (devoxelize(voxel_feats, pm, s) - voxel_to_point(x, z).F).abs().max() < TOL, s
        assert (voxelize_mean(z.F, pm, s) - point_to_voxel(x, z).F).abs().max() < TOL, s
        assert pm.weights[s].sum(1).min() > 0  # every point has its own voxel at every level


@pytest.mark.real_data
def test_point_voxel_ops_equal_spvoxelize_and_spdevoxelize_on_a_real_frame(real_data):
    pts = _frame(real_data, "nuscenes", 0.1, 25.0)
    _check_point_voxel_ops(pts, torch.zeros(len(pts), dtype=torch.long), 0.1)


def test_point_voxel_ops_equal_torchsparse_on_a_batch_of_two_clouds():
    clouds = [torch.from_numpy(lidar_like_scene(s, beams=16, azimuth_steps=360)) for s in (3, 4)]
    pts = torch.cat(clouds)
    pts[:, :3] += 3.2 * torch.ceil(-pts[:, :3].min(0).values / 3.2)
    batch = torch.cat([torch.full((len(c),), i) for i, c in enumerate(clouds)])
    _check_point_voxel_ops(pts, batch, 0.2)


@pytest.mark.real_data
@pytest.mark.parametrize("arch", ["minkunet18", "spvcnn"])
def test_convert_command_gives_a_checkpoint_the_segmenter_runs(real_data, tmp_path, arch):
    from support.node_harness import make_test_models

    from clip2scene_ros.cli.main import main
    from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig

    models = make_test_models(tmp_path / "models")
    teacher = models["teacher"] or None
    dim = json.loads((Path(models["checkpoint"]) / "model.json").read_text())["config"]["embed_dim"]  # the teacher's
    _, ref = _pair(arch, seed=2, classes=dim)  # CLIP2Scene: the classifier maps into the text-embedding space
    pth = tmp_path / "clip2scene_pretrained.pth"
    torch.save({"model_points": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 50}, pth)
    out = tmp_path / "converted"
    assert main(["convert-torchsparse", str(pth), "--out", str(out), "--voxel-size", "0.1"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["config"]["arch"] == ("spvcnn" if arch == "spvcnn" else "minkunet")
    assert meta["config"]["heads"] == ["global"] and meta["config"]["embed_dim"] == dim
    assert (out / "model.safetensors").is_file()

    seg = Segmenter.from_config(SegmenterConfig(checkpoint=str(out), teacher=teacher))
    pts = _frame(real_data, "nuscenes", 0.1, 12.0)
    result = seg.segment(pts.numpy())
    assert result.indices.size == len(pts) and (result.labels >= 1).all()
    if arch == "spvcnn":
        expected = run_spvcnn(ref, pts[:, :3] / torch.full((3,), 0.1), torch.zeros(len(pts), dtype=torch.long),
                              pts[:, 3:4])  # fmt: skip
    else:
        vox = voxelize(pts, 0.1)
        maps = create_model("minkunet18_tiny").build_maps(vox.coords)
        feats = vox.feats.index_select(0, maps.input_order)[:, 3:4]
        expected = run_minkunet(ref, maps.coords[0], feats)[maps.input_rank[vox.point_to_voxel]]
    unit = torch.nn.functional.normalize(expected, dim=1).numpy()
    np.testing.assert_allclose(result.unit_features()[np.argsort(result.indices)], unit, atol=1e-4)


def test_converter_refuses_pickled_code_and_foreign_state_dicts(tmp_path):
    from clip2scene_ros.models import load_torchsparse_state
    from clip2scene_ros.models.convert import config_from_torchsparse

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    bad = tmp_path / "bad.pth"
    torch.save({"model": Payload()}, bad)
    with pytest.raises(ValueError, match="not loadable as plain tensors"):
        load_torchsparse_state(bad)
    with pytest.raises(FileNotFoundError):
        load_torchsparse_state(tmp_path / "missing.pth")
    other = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3)}}, other)
    with pytest.raises(ValueError, match="not an SpVNAS/CLIP2Scene MinkUNet or SPVCNN"):
        config_from_torchsparse(load_torchsparse_state(other), 0.1)
    _, ref = _pair("minkunet18")
    state = {k: v for k, v in ref.state_dict().items()}
    state["stem.0.kernel"] = torch.zeros(27, 2, state["stem.0.kernel"].shape[-1])
    with pytest.raises(ValueError, match="2 input channels"):
        config_from_torchsparse(state, 0.1)
