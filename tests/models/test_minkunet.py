"""Whole MinkUNet against spconv CPU (converted weights), configs, checkpoints, encode_points."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sparse"))
from spconv_reference import spconv_minkunet  # noqa: E402

from clip2scene_ros.models import (  # noqa: E402
    MinkUNet,
    create_model,
    list_models,
    load_checkpoint,
    load_config,
    save_checkpoint,
)
from clip2scene_ros.models.inputs import encode_points, voxel_features  # noqa: E402
from clip2scene_ros.sparse import voxelize  # noqa: E402
from clip2scene_ros.sparse.samples import crop, lidar_like_scene, load_real_frame  # noqa: E402

TOL = 1e-4


def _randomise_bn(model: MinkUNet, seed: int = 0) -> MinkUNet:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def _tiny(**kw) -> MinkUNet:
    torch.manual_seed(0)
    return _randomise_bn(create_model("minkunet18", width=0.25, embed_dim=16, **kw))


def _compare(model: MinkUNet, points: torch.Tensor, voxel_size: float) -> None:
    v = voxelize(points, voxel_size)
    maps = model.build_maps(v.coords)
    feats = voxel_features(model.config, v).index_select(0, maps.input_order)
    with torch.no_grad():
        ours = model(feats, maps)
        ref = spconv_minkunet(model, maps.coords[0], feats, v.batch_size)
    for h in ours:
        assert ref[h].abs().mean() > 1e-3  # a real signal, not zeros
        assert (ours[h] - ref[h]).abs().max() < TOL, h
    # the same with BatchNorm folded into the convolutions
    folded = create_model(model.config)
    folded.load_state_dict(model.state_dict())
    folded.fold_bn()
    with torch.no_grad():
        out = folded(feats, maps)
    for h in ours:
        assert (out[h] - ours[h]).abs().max() < TOL


def test_whole_minkunet_matches_spconv_on_generated_scenes():
    model = _tiny()
    _compare(model, torch.from_numpy(lidar_like_scene(0, beams=32, azimuth_steps=720)), 0.1)
    batch = [torch.from_numpy(lidar_like_scene(s, beams=16, azimuth_steps=360)) for s in (1, 2)]
    v = torch.cat(batch)
    b = torch.cat([torch.full((len(p),), i) for i, p in enumerate(batch)])
    vox = voxelize(v, 0.2, batch=b)
    maps = model.build_maps(vox.coords)
    feats = vox.feats.index_select(0, maps.input_order)[:, 3:4]
    with torch.no_grad():
        ours, ref = model(feats, maps), spconv_minkunet(model, maps.coords[0], feats, 2)
    assert (ours["local"] - ref["local"]).abs().max() < TOL


def test_minkunet34_xyz_features_and_stem_kernel5_match_spconv():
    torch.manual_seed(1)
    model = _randomise_bn(
        create_model("minkunet34", width=0.125, embed_dim=8, in_features=["x", "y", "z", "intensity"], stem_kernel=5)
    )
    _compare(model, torch.from_numpy(lidar_like_scene(3, beams=16, azimuth_steps=480)), 0.15)


@pytest.mark.real_data
def test_whole_minkunet_matches_spconv_on_real_frames(real_data):
    model = _tiny()
    _compare(model, torch.from_numpy(load_real_frame(real_data, "nuscenes")), 0.1)
    _compare(model, torch.from_numpy(crop(load_real_frame(real_data, "kitti"), 20.0)), 0.05)


def test_configs_registry_and_overrides():
    names = list_models()
    assert {"minkunet18", "minkunet34", "minkunet18_tiny"} <= set(names)
    tiny = load_config("minkunet18_tiny")
    assert tiny.width == 0.25 and tiny.embed_dim == 64 and tiny.heads == ["global", "local"]
    assert load_config("minkunet34").layers == [2, 3, 4, 6, 2, 2, 2, 2]
    m = create_model("minkunet18_tiny", embed_dim=32, heads=["clip"])
    assert list(m.heads) == ["clip"] and m.heads["clip"].out_features == 32
    full = sum(p.numel() for p in create_model("minkunet18").parameters())
    assert 20e6 < full < 23e6  # SpVNAS MinkUNet widths with a 2 x 512-d head
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet50")
    with pytest.raises(ValueError, match="unknown model config keys"):
        create_model("minkunet18", depth=3)
    with pytest.raises(ValueError, match="unknown input feature"):
        create_model("minkunet18", in_features=["colour"])


def test_checkpoint_round_trip_plain_and_folded(tmp_path):
    model = _tiny()
    pts = torch.from_numpy(lidar_like_scene(4, beams=16, azimuth_steps=360))
    with torch.no_grad():
        before = encode_points(model, [pts])[0]
    save_checkpoint(tmp_path / "a", model, extra={"step": 7})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["model.json", "model.safetensors"]
    loaded, cfg, extra = load_checkpoint(tmp_path / "a")
    assert extra == {"step": 7} and cfg == model.config
    with torch.no_grad():
        after = encode_points(loaded.eval(), [pts])[0]
    assert torch.equal(before["global"], after["global"])
    save_checkpoint(tmp_path / "b", loaded.fold_bn())
    folded, _, _ = load_checkpoint(tmp_path / "b")
    assert folded.bn_folded
    with torch.no_grad():
        assert (encode_points(folded, [pts])[0]["local"] - before["local"]).abs().max() < TOL
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint(tmp_path)


def test_encode_points_batches_gathers_per_point_and_is_differentiable():
    model = create_model("minkunet18_tiny", embed_dim=8).train()
    a = torch.from_numpy(lidar_like_scene(5, beams=8, azimuth_steps=240))
    b = torch.from_numpy(lidar_like_scene(6, beams=8, azimuth_steps=180))
    b[3] = float("nan")
    out = encode_points(model, [a, b], voxel_size=0.2)
    assert [o["global"].shape for o in out] == [(len(a), 8), (len(b), 8)]
    assert torch.equal(out[1]["local"][3], torch.zeros(8))
    # points in the same voxel share a feature
    v = voxelize(a, 0.2)
    same = (v.point_to_voxel == v.point_to_voxel[0]).nonzero().squeeze(1)
    assert torch.equal(out[0]["global"][same], out[0]["global"][0].expand(len(same), -1))
    loss = sum(o["global"].square().mean() + o["local"].abs().mean() for o in out)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    empty = encode_points(model, [torch.zeros((0, 4))])
    assert empty[0]["global"].shape == (0, 8)
    with pytest.raises(ValueError, match="columns"):
        encode_points(model, [torch.zeros((5, 3))])


def test_torchsparse_spvnas_state_dict_round_trip():
    from clip2scene_ros.models import export_torchsparse_minkunet, import_torchsparse_minkunet

    src = _tiny()
    ts = export_torchsparse_minkunet(src)
    assert ts["stem.0.kernel"].shape == (27, 1, 8) and ts["stage1.0.net.0.kernel"].shape == (8, 8, 8)
    assert ts["stage2.1.downsample.0.kernel"].ndim == 2 and "classifier.0.weight" in ts
    # x-fastest order: torchsparse offset 1 is (x=0, y=-1, z=-1), ours (x slowest) is 9
    assert torch.equal(ts["stem.0.kernel"][1], src.stem[0].conv.weight.detach()[9])
    dst = _randomise_bn(create_model("minkunet18", width=0.25, embed_dim=16), seed=5)
    import_torchsparse_minkunet(dst, {f"module.{k}": v for k, v in ts.items()})
    pts = [torch.from_numpy(lidar_like_scene(8, beams=8, azimuth_steps=240))]
    with torch.no_grad():
        assert torch.equal(encode_points(dst, pts)[0]["global"], encode_points(src, pts)[0]["global"])
    with pytest.raises(ValueError, match="width"):
        import_torchsparse_minkunet(create_model("minkunet18", width=0.5, embed_dim=16), ts)
