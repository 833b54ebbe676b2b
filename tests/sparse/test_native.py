"""The fused fp32 CPU kernels (g++-built) against the torch engine, brute force and spconv."""

import numpy as np
import pytest
import torch
from spconv_reference import shifted_coords, spconv
from test_kmap import _brute_pairs, _random_coords

from clip2scene_ros.models import MinkUNet, ModelConfig
from clip2scene_ros.models.inputs import prepare_inputs
from clip2scene_ros.sparse import build_kernel_maps, down_conv, from_spconv, native, subm_conv, up_conv, voxelize
from clip2scene_ros.sparse.samples import lidar_like_scene, load_real_frame
from clip2scene_ros.sparse.voxelize import pack_keys

if not native.available():
    pytest.skip(f"fused CPU kernels unavailable: {native._failed}", allow_module_level=True)


def _sorted(coords):
    return coords[torch.argsort(pack_keys(coords))]


def _to_natural(km, tm, level):
    """Row of each KernelMaps level row in the table maps' (key-sorted) order."""
    return torch.searchsorted(pack_keys(tm.coords[level]), pack_keys(km.coords[level]))


@pytest.mark.parametrize("k", [3, 5])
def test_subm_pairs_equal_brute_force_lookup(k):
    coords = _sorted(_random_coords(n=500, extent=6, batches=2, seed=k))
    tm = native.build_table_maps(coords, 1, kernel_sizes=(k,))
    pairs = tm.subm_map(0, k).pairs
    ref = _brute_pairs(coords, k)
    table = pairs.to_table()
    assert int(pairs.k_ptr[-1]) == len(ref)
    assert {(o, j): int(table[o, j]) for o, j in torch.nonzero(table >= 0).tolist()} == ref
    for j in range(k**3):  # each offset's output rows ascend (the kernel splits threads on them)
        seg = pairs.p_out[pairs.k_ptr[j] : pairs.k_ptr[j + 1]]
        assert bool((seg[1:] > seg[:-1]).all())


def test_levels_and_down_pairs_match_kernel_maps():
    coords = voxelize(torch.from_numpy(lidar_like_scene(2, beams=16, azimuth_steps=360)), 0.1).coords
    tm, km = native.build_table_maps(coords, 4), build_kernel_maps(coords, 4)
    for s in range(4):
        nat = _to_natural(km, tm, s)
        assert torch.equal(tm.coords[s][nat], km.coords[s])
    for s in range(3):
        fine, coarse = _to_natural(km, tm, s), _to_natural(km, tm, s + 1)
        d = tm.down[s]
        # child slot of each fine row and its parent, as the KernelMaps hold them
        parent_ref = torch.empty(len(fine), dtype=torch.long)
        parent_ref[fine[km.down[s].fine_idx]] = coarse[km.down[s].parent_idx]
        up = d.up.to_table()
        assert torch.equal(up.max(1).values, parent_ref) and bool(((up >= 0).sum(1) == 1).all())
        child = d.child.to_table()
        assert torch.equal(child, d.child.to_table()) and int((child >= 0).sum()) == len(fine)
        rows, slots = torch.nonzero(child >= 0, as_tuple=True)
        assert torch.equal(parent_ref[child[rows, slots]], rows)


def test_convolutions_equal_the_torch_engine():
    g = torch.Generator().manual_seed(0)
    coords = voxelize(torch.from_numpy(lidar_like_scene(3, beams=16, azimuth_steps=720)), 0.1).coords
    tm, km = native.build_table_maps(coords, 3), build_kernel_maps(coords, 3)
    nat = [_to_natural(km, tm, s) for s in range(3)]
    with torch.no_grad():
        for cin, cout in [(1, 8), (8, 8), (24, 24), (32, 64), (96, 64), (5, 7), (12, 40)]:
            w, b = torch.randn(27, cin, cout, generator=g), torch.randn(cout, generator=g)
            for s in range(3):
                x = torch.relu(torch.randn(len(nat[s]), cin, generator=g))
                res = torch.randn(len(nat[s]), cout, generator=g)
                ref = torch.relu(subm_conv(x[nat[s]], w, b, km.subm_map(s)) + res[nat[s]])
                got = native.pair_conv(x, w, tm.subm_map(s).pairs, b, relu=True, residual=res)
                torch.testing.assert_close(got[nat[s]], ref, atol=1e-4, rtol=1e-5)
            wd = torch.randn(8, cin, cout, generator=g)
            x = torch.randn(len(nat[0]), cin, generator=g)
            ref = down_conv(x[nat[0]], wd, None, km.down[0])
            torch.testing.assert_close(native.pair_conv(x, wd, tm.down[0].child)[nat[1]], ref, atol=1e-4, rtol=1e-5)
            wu = torch.randn(8, cout, cin, generator=g)
            xc = torch.randn(len(nat[1]), cout, generator=g)
            ref = up_conv(xc[nat[1]], wu, None, km.down[0])
            torch.testing.assert_close(native.pair_conv(xc, wu, tm.down[0].up)[nat[0]], ref, atol=1e-4, rtol=1e-5)


def test_threads_give_the_same_result():
    coords = voxelize(torch.from_numpy(lidar_like_scene(4, beams=16, azimuth_steps=720)), 0.1).coords
    tm = native.build_table_maps(coords, 1)
    x, w = torch.randn(len(coords), 16), torch.randn(27, 16, 24)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.pair_conv(x, w, tm.subm_map(0).pairs)
        torch.set_num_threads(2)
        two = native.pair_conv(x, w, tm.subm_map(0).pairs)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)  # each output row's sum has one order, whatever the split
    with native.kernel_threads(3):  # barrier-free sharing; torch's own operators on one thread
        assert torch.get_num_threads() == 1
        for _ in range(20):  # back-to-back jobs through the persistent helpers
            assert torch.equal(native.pair_conv(x, w, tm.subm_map(0).pairs), one)
    assert torch.get_num_threads() == before


def _spconv_check(coords, cin=8, cout=16):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    tm = native.build_table_maps(coords, 2)
    sc, shape = shifted_coords(coords)
    x = torch.randn(len(coords), cin, generator=g)
    st = spconv.SparseConvTensor(x, sc, shape, int(coords[:, 0].max()) + 1)
    subm = spconv.SubMConv3d(cin, cout, 3, bias=False, indice_key="s")
    down = spconv.SparseConv3d(cin, cout, 2, 2, bias=False, indice_key="d")
    up = spconv.SparseInverseConv3d(cout, cin, 2, bias=False, indice_key="d")
    with torch.no_grad():
        got = native.pair_conv(x, from_spconv(subm.weight.data), tm.subm_map(0).pairs)
        assert (got - subm(st).features).abs().max() < 1e-4
        d_ref = down(st)
        coarse = tm.coords[1].clone()
        coarse[:, 1:] += (sc[:1, 1:].long() - coords[:1, 1:]) // 2
        lut = {tuple(r): i for i, r in enumerate(d_ref.indices.long().tolist())}
        perm = torch.tensor([lut[tuple(r)] for r in coarse.tolist()])
        d_got = native.pair_conv(x, from_spconv(down.weight.data), tm.down[0].child)
        assert (d_got - d_ref.features[perm]).abs().max() < 1e-4
        xc = torch.randn(len(coarse), cout, generator=g)
        feed = torch.empty_like(xc)
        feed[perm] = xc
        u_ref = up(d_ref.replace_feature(feed))
        u_got = native.pair_conv(xc, from_spconv(up.weight.data), tm.down[0].up)
        assert (u_got - u_ref.features).abs().max() < 1e-4


def test_layers_match_spconv():
    coords = voxelize(torch.from_numpy(lidar_like_scene(0, beams=16, azimuth_steps=720)), 0.1).coords
    _spconv_check(coords)
    batch = [torch.from_numpy(lidar_like_scene(s, beams=8, azimuth_steps=360)) for s in (5, 6)]
    _spconv_check(voxelize(batch, 0.2).coords)


@pytest.mark.real_data
def test_layers_match_spconv_on_the_real_nuscenes_frame(real_data):
    _spconv_check(voxelize(torch.from_numpy(load_real_frame(real_data, "nuscenes")), 0.1).coords, cin=16, cout=32)


def test_whole_network_equals_the_torch_engine():
    torch.manual_seed(0)
    cfg = ModelConfig(width=0.25, embed_dim=16, stem_kernel=5)
    model = MinkUNet(cfg).fold_bn()
    for p in model.parameters():  # non-trivial folded biases
        p.data.add_(0.01 * torch.randn_like(p))
    pts = torch.from_numpy(np.concatenate([lidar_like_scene(7, beams=16, azimuth_steps=720)], 0)).float()
    ref_in, fused_in = prepare_inputs(cfg, pts), prepare_inputs(cfg, pts, table_maps=True)
    assert isinstance(fused_in.maps, native.TableMaps)
    with torch.no_grad():
        ref, got = model(ref_in.feats, ref_in.maps), model(fused_in.feats, fused_in.maps)
    valid = ref_in.rows >= 0
    assert torch.equal(valid, fused_in.rows >= 0)
    for h in cfg.heads:  # per point: the two row orders differ
        a, b = ref[h][ref_in.rows[valid]], got[h][fused_in.rows[valid]]
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def _reference_pair_conv(x, w, b, pairs):
    """The pair convolution in plain torch ops (autograd's own backward)."""
    k = torch.repeat_interleave(torch.arange(pairs.num_offsets), pairs.k_ptr[1:] - pairs.k_ptr[:-1])
    terms = torch.bmm(x[pairs.p_in.long()].unsqueeze(1), w[k]).squeeze(1)
    return torch.zeros(pairs.num_rows, w.shape[2]).index_add(0, pairs.p_out.long(), terms) + b


@pytest.mark.parametrize("layer", ["subm3", "subm5", "down", "up", "pointwise"])
def test_fused_layers_backward_equals_autograd(layer):
    """Training on the fused kernels: input, weight and bias gradients of every layer kind."""
    coords = _sorted(_random_coords(n=600, extent=7, batches=2, seed=3))
    tm = native.build_table_maps(coords, 2, kernel_sizes=(3, 5))
    pairs, transpose = {
        "subm3": (tm.subm_map(0, 3).pairs, (tm.subm_map(0, 3).pairs, True)),
        "subm5": (tm.subm_map(0, 5).pairs, (tm.subm_map(0, 5).pairs, True)),
        "down": (tm.down[0].child, (tm.down[0].up, False)),
        "up": (tm.down[0].up, (tm.down[0].child, False)),
        "pointwise": (tm.identity(0), (tm.identity(0), False)),
    }[layer]
    n_in = int(pairs.p_in.max()) + 1
    torch.manual_seed(0)
    x = torch.randn(n_in, 12, requires_grad=True)
    w = torch.randn(pairs.num_offsets, 12, 16, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    probe = torch.randn(pairs.num_rows, 16)
    out = native.pair_conv(x, w, pairs, b, relu=True, transpose=transpose)
    (out * probe).sum().backward()
    got = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    ref = torch.relu(_reference_pair_conv(x, w, b, pairs))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    (ref * probe).sum().backward()
    for g, t in zip(got, (x, w, b)):
        torch.testing.assert_close(g, t.grad, atol=1e-3, rtol=1e-4)


def test_training_on_fused_kernels_follows_the_torch_engine():
    """A training step of a whole MinkUNet (BatchNorm in train mode, two clouds) on the table maps
    gives the same per-point outputs and parameter gradients as on the torch engine's maps."""
    torch.manual_seed(0)
    cfg = ModelConfig(width=0.25, embed_dim=16)
    model = MinkUNet(cfg).train()
    clouds = [torch.from_numpy(lidar_like_scene(s, beams=16, azimuth_steps=360)).float() for s in (1, 2)]
    probe = None

    def step(table):
        nonlocal probe
        model.zero_grad()
        p = prepare_inputs(cfg, clouds, table_maps=table)
        assert isinstance(p.maps, native.TableMaps) == table
        feats = model(p.feats, p.maps)["global"][p.rows]
        probe = torch.randn_like(feats) if probe is None else probe
        (feats * probe).sum().backward()
        return feats.detach(), {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}

    (ref, ref_grads), (got, got_grads) = step(False), step(True)
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)
    assert got_grads.keys() == ref_grads.keys() and len(ref_grads) > 100
    for name, g in ref_grads.items():
        # many BatchNorms in train mode amplify float summation order in the deepest layers
        scale = g.abs().max().clamp(min=1e-6)
        assert (got_grads[name] - g).abs().max() / scale < 0.05, name


def test_bad_inputs_are_refused():
    coords = _random_coords(n=200, extent=5, batches=1)
    with pytest.raises(ValueError, match="sorted"):
        native.build_table_maps(torch.flip(_sorted(coords), [0]), 1)
    tm = native.build_table_maps(_sorted(coords), 1)
    x, w = torch.randn(len(coords), 4, requires_grad=True), torch.randn(27, 4, 8)
    with pytest.raises(RuntimeError, match="transposed pairs"):
        native.pair_conv(x, w, tm.subm_map(0).pairs)
    with pytest.raises(ValueError, match="channels"):
        native.pair_conv(torch.randn(len(coords), 3), w, tm.subm_map(0).pairs)
    with pytest.raises(TypeError, match="fp32"):
        native.pair_conv(x.detach().double(), w.double(), tm.subm_map(0).pairs)
    empty = native.build_table_maps(torch.zeros((0, 4), dtype=torch.long), 2)
    assert native.pair_conv(torch.zeros(0, 4), w, empty.subm_map(0).pairs).shape == (0, 8)


def test_voxelizer_equals_voxelize():
    pts = torch.from_numpy(lidar_like_scene(8, beams=16, azimuth_steps=720)).float()
    pts[::97, 1] = float("nan")  # dropped, as voxelize drops them
    pts[::89, 3] = float("inf")
    pts[:50, :3] -= 300.0  # negative coordinates floor downwards
    ref = voxelize(pts, 0.1)
    keys, feats, p2v = native.voxelize_keys(pts, 0.1)
    assert torch.equal(keys, pack_keys(ref.coords)) and torch.equal(p2v, ref.point_to_voxel)
    torch.testing.assert_close(feats, ref.feats, atol=1e-5, rtol=1e-6)
    far = pts.clone()
    far[1, 0] = 1e7  # beyond the hashable range: voxelize() reports it
    assert native.voxelize_keys(far, 0.1) is None
    with pytest.raises(ValueError, match="hashable range"):
        prepare_inputs(ModelConfig(width=0.25), far, table_maps=True)
    empty = prepare_inputs(ModelConfig(width=0.25), torch.full((5, 4), float("nan")), table_maps=True)
    assert empty.num_voxels == 0 and bool((empty.rows == -1).all())


def test_an_avx2_only_build_gives_the_same_results(tmp_path):
    """The kernels compiled for an AVX2-only CPU (AMD EPYC class: 16 vector registers, 8 floats)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if "avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this CPU cannot run an AVX2 build")
    code = (
        "import torch\n"
        "from clip2scene_ros.sparse import build_kernel_maps, native, subm_conv, voxelize\n"
        "from clip2scene_ros.sparse.samples import lidar_like_scene\n"
        "assert native.MARCH == 'haswell' and native.available(), native._failed\n"
        "coords = voxelize(torch.from_numpy(lidar_like_scene(3, beams=16, azimuth_steps=360)), 0.1).coords\n"
        "tm, km = native.build_table_maps(coords, 1), build_kernel_maps(coords, 1)\n"
        "back = km.input_order\n"  # level row r = voxelize row back[r]
        "for cin, cout in [(8, 8), (24, 24), (32, 64), (96, 64), (12, 40)]:\n"
        "    x, w = torch.relu(torch.randn(len(coords), cin)), torch.randn(27, cin, cout)\n"
        "    with torch.no_grad():\n"
        "        ref = subm_conv(x[back], w, None, km.subm_map(0))\n"
        "        got = native.pair_conv(x, w, tm.subm_map(0).pairs)[back]\n"
        "    assert (got - ref).abs().max() < 1e-4, (cin, cout)\n"
    )
    env = dict(os.environ, CLIP2SCENE_NATIVE_MARCH="haswell", CLIP2SCENE_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(tmp_path.glob("native/*.so")), "the AVX2 build was not written to the cache"


def test_a_built_library_serves_a_machine_without_a_compiler(monkeypatch):
    built = native.build()
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert native.build() == built  # keyed by source, flags and CPU, not by the compiler
