"""Every layer type against spconv 2.x CPU (one thread) and a float64 brute-force reference."""

import pytest
import torch
from spconv_reference import shifted_coords, spconv

from clip2scene_ros.sparse import (
    DownConv3d,
    SubmConv3d,
    UpConv3d,
    build_kernel_maps,
    from_spconv,
    from_torchsparse,
    kernel_offsets,
    to_torchsparse,
    voxelize,
)
from clip2scene_ros.sparse.samples import crop, lidar_like_scene, load_real_frame

TOL = 1e-4


def _scenes(real_root=None):
    yield "generated", lidar_like_scene(0, beams=16, azimuth_steps=720), 0.1
    yield "generated-dense", crop(lidar_like_scene(1, beams=32, azimuth_steps=1440), 15.0), 0.05
    if real_root is not None:
        yield "nuscenes", load_real_frame(real_root, "nuscenes"), 0.1
        yield "kitti", crop(load_real_frame(real_root, "kitti"), 20.0), 0.05


def _check_scene(coords, cin=8, cout=12, kernels=(3,)):
    g = torch.Generator().manual_seed(0)
    maps = build_kernel_maps(coords, 2, kernel_sizes=kernels)
    c0 = maps.coords[0]
    sc, shape = shifted_coords(c0)
    x = torch.randn(len(c0), cin, generator=g)
    for k in kernels:
        ref_conv = spconv.SubMConv3d(cin, cout, k, bias=False, indice_key=f"k{k}")
        ours = SubmConv3d(cin, cout, k)
        ours.weight.data = from_spconv(ref_conv.weight.data)
        with torch.no_grad():
            ref = ref_conv(spconv.SparseConvTensor(x, sc, shape, int(c0[:, 0].max()) + 1)).features
            got = ours(x, maps, 0)
        assert (got - ref).abs().max() < TOL, f"subm k{k}"
    st = spconv.SparseConvTensor(x, sc, shape, int(c0[:, 0].max()) + 1)
    down_ref = spconv.SparseConv3d(cin, cout, 2, 2, bias=False, indice_key="d")
    up_ref = spconv.SparseInverseConv3d(cout, cin, 2, bias=False, indice_key="d")
    down, up = DownConv3d(cin, cout), UpConv3d(cout, cin)
    down.weight.data = from_spconv(down_ref.weight.data)
    up.weight.data = from_spconv(up_ref.weight.data)
    with torch.no_grad():
        d_ref = down_ref(st)
        d_got = down(x, maps, 0)
        # spconv orders the coarse voxels its own way: match rows by coordinate
        coarse = maps.coords[1].clone()
        coarse[:, 1:] += (sc[:1, 1:].long() - c0[:1, 1:]) // 2
        lut = {tuple(r): i for i, r in enumerate(d_ref.indices.long().tolist())}
        perm = torch.tensor([lut[tuple(r)] for r in coarse.tolist()])
        assert (d_got - d_ref.features[perm]).abs().max() < TOL, "k2s2 down"
        xc = torch.randn(len(coarse), cout, generator=g)
        feed = torch.empty_like(xc)
        feed[perm] = xc
        u_ref = up_ref(d_ref.replace_feature(feed))
        assert torch.equal(u_ref.indices, sc)
        assert (up(xc, maps, 0) - u_ref.features).abs().max() < TOL, "transposed k2s2 up"


def test_layers_match_spconv_on_generated_scenes():
    for _, pts, vs in _scenes():
        _check_scene(voxelize(torch.from_numpy(pts), vs).coords, kernels=(3, 5))


@pytest.mark.real_data
def test_layers_match_spconv_on_real_frames(real_data):
    for name, pts, vs in list(_scenes(real_data))[2:]:
        coords = voxelize(torch.from_numpy(pts), vs).coords
        assert len(coords) > 5000, name
        _check_scene(coords, cin=16, cout=32)


def test_batched_maps_match_spconv_batches():
    a, b = lidar_like_scene(3, beams=8, azimuth_steps=360), lidar_like_scene(4, beams=8, azimuth_steps=360)
    _check_scene(voxelize([torch.from_numpy(a), torch.from_numpy(b)], 0.2).coords)


def test_subm_against_float64_brute_force_with_torchsparse_weights():
    coords = voxelize(torch.from_numpy(lidar_like_scene(5, beams=8, azimuth_steps=240)), 0.3).coords
    maps = build_kernel_maps(coords, 1)
    c = maps.coords[0]
    x = torch.randn(len(c), 4, dtype=torch.float64)
    conv = SubmConv3d(4, 6, 3).double()
    lut = {tuple(r): i for i, r in enumerate(c.tolist())}
    ref = torch.zeros(len(c), 6, dtype=torch.float64)
    for o, (bb, xx, yy, zz) in enumerate(c.tolist()):
        for k, (dx, dy, dz) in enumerate(kernel_offsets(3)):
            i = lut.get((bb, xx + dx, yy + dy, zz + dz))
            if i is not None:
                ref[o] += x[i] @ conv.weight[k].detach()
    with torch.no_grad():
        assert (conv(x, maps, 0) - ref).abs().max() < 1e-10
    # torchsparse stores odd kernels x-fastest; the converters are inverse and permute offsets
    ts = to_torchsparse(conv.weight.detach())
    r = (-1, 0, 1)
    ts_offsets = [(dx, dy, dz) for dz in r for dy in r for dx in r]  # torchsparse: x fastest
    for k_ts, (dx, dy, dz) in enumerate(ts_offsets):
        k_ours = kernel_offsets(3).index((dx, dy, dz))
        assert torch.equal(ts[k_ts], conv.weight.detach()[k_ours])
    assert torch.equal(from_torchsparse(ts), conv.weight.detach())
    assert torch.equal(from_torchsparse(ts[:8]), ts[:8])  # 2x2x2: already row-major
    assert from_torchsparse(torch.zeros(4, 6)).shape == (1, 4, 6)


def test_gradients_flow_through_every_layer_type():
    coords = voxelize(torch.from_numpy(lidar_like_scene(6, beams=8, azimuth_steps=240)), 0.3).coords
    maps = build_kernel_maps(coords, 2)
    x = torch.randn(len(coords), 4, requires_grad=True)
    subm, down, up = SubmConv3d(4, 4), DownConv3d(4, 8), UpConv3d(8, 4)
    y = up(down(subm(x, maps, 0, relu=True), maps, 0), maps, 0)
    y.square().sum().backward()
    for p in (x, subm.weight, down.weight, up.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # gradient check of the scatter-free accumulation in float64 on a small map
    small = build_kernel_maps(coords[:60], 2)
    xd = torch.randn(60, 2, dtype=torch.float64, requires_grad=True)
    wd = torch.randn(27, 2, 3, dtype=torch.float64, requires_grad=True)
    from clip2scene_ros.sparse import subm_conv

    assert torch.autograd.gradcheck(lambda a, w: subm_conv(a, w, None, small.subm_map(0)), (xd, wd))


def test_padded_export_form_equals_the_exact_maps():
    from clip2scene_ros.sparse import PaddedMaps, padded_tensors

    coords = voxelize(torch.from_numpy(lidar_like_scene(7, beams=16, azimuth_steps=360)), 0.2).coords
    maps = build_kernel_maps(coords, 3)
    padded = PaddedMaps.from_flat(padded_tensors(maps), 3)
    x = torch.randn(len(coords), 6)
    subm, down, up = SubmConv3d(6, 5, bias=True), DownConv3d(6, 7), UpConv3d(7, 6)
    with torch.no_grad():
        for s in range(3):
            xs = torch.randn(len(maps.coords[s]), 6)
            torch.testing.assert_close(subm(xs, padded, s), subm(xs, maps, s), atol=1e-5, rtol=0)
        torch.testing.assert_close(down(x, padded, 0), down(x, maps, 0), atol=1e-5, rtol=0)
        xc = torch.randn(len(maps.coords[1]), 7)
        torch.testing.assert_close(up(xc, padded, 0), up(xc, maps, 0), atol=1e-5, rtol=0)
