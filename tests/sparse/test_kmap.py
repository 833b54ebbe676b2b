import pytest
import torch

from clip2scene_ros.sparse import build_kernel_maps, kernel_offsets, voxelize
from clip2scene_ros.sparse.samples import lidar_like_scene


def _random_coords(n=600, extent=12, batches=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, batches, (n, 1), generator=g)
    c = torch.unique(torch.cat([b, torch.randint(-extent, extent, (n, 3), generator=g)], 1), dim=0)
    return c[torch.randperm(len(c), generator=g)]


def _brute_pairs(coords, k):
    """{(out_row, offset_index): in_row} by dictionary lookup."""
    lut = {tuple(c): i for i, c in enumerate(coords.tolist())}
    res = {}
    for o, (b, x, y, z) in enumerate(coords.tolist()):
        for j, (dx, dy, dz) in enumerate(kernel_offsets(k)):
            i = lut.get((b, x + dx, y + dy, z + dz))
            if i is not None:
                res[(o, j)] = i
    return res


def _decode_subm(m, k):
    """Recover {(out_row, offset): in_row} from a SubmMap, checking the prefix layout."""
    pb, ab = m.pair_bounds.tolist(), m.acc_bounds.tolist()
    centre = k**3 // 2
    offsets = [j for j in range(k**3) if j != centre]
    pos_to_offset, pos_to_in = {}, {}
    for s, j in enumerate(offsets):
        for p in range(pb[s], pb[s + 1]):
            pos_to_offset[p], pos_to_in[p] = j, int(m.pair_in[p])
    res = {(o, centre): o for o in range(m.num_voxels)}
    lengths = [ab[j + 1] - ab[j] for j in range(len(offsets))]
    assert lengths == sorted(lengths, reverse=True), "columns must shrink (rows sorted by count)"
    for col in range(len(offsets)):
        seg = m.acc_idx[ab[col] : ab[col + 1]].tolist()
        for row, p in enumerate(seg):  # column j holds rows 0..n_j-1
            res[(row, pos_to_offset[p])] = pos_to_in[p]
    assert sorted(m.acc_idx.tolist()) == list(range(m.num_pairs))
    return res


@pytest.mark.parametrize("k", [3, 5])
def test_submanifold_maps_equal_brute_force_on_every_level(k):
    coords = _random_coords()
    maps = build_kernel_maps(coords, num_levels=3, kernel_sizes=(3, k))
    assert torch.equal(maps.coords[0], coords[maps.input_order])
    assert torch.equal(maps.input_order[maps.input_rank], torch.arange(len(coords)))
    for s in range(3):
        m = maps.subm_map(s, k)
        got = _decode_subm(m, k)
        if m.row_rank is not None:  # secondary kernel: rows in its own order
            inv = torch.empty_like(m.row_rank)
            inv[m.row_rank] = torch.arange(len(inv))
            got = {(int(inv[o]) if j != k**3 // 2 else o, j): i for (o, j), i in got.items()}
            got = {key: v for key, v in got.items()}
            centre = {(o, k**3 // 2): o for o in range(m.num_voxels)}
            got.update(centre)
        assert got == _brute_pairs(maps.coords[s], k)


def test_levels_down_and_up_maps_follow_floor_division():
    coords = _random_coords(seed=3)
    maps = build_kernel_maps(coords, num_levels=4)
    for s, d in enumerate(maps.down):
        fine, coarse = maps.coords[s], maps.coords[s + 1]
        expect = fine.clone()
        expect[:, 1:] = torch.div(expect[:, 1:], 2, rounding_mode="floor")
        assert sorted(map(tuple, expect.unique(dim=0).tolist())) == sorted(map(tuple, coarse.tolist()))
        # each fine voxel: parent = floor(fine / 2), slot = fine - 2 * parent (row-major)
        parent = torch.empty(len(fine), dtype=torch.long)
        parent[d.fine_idx] = d.parent_idx
        assert torch.equal(coarse[parent][:, 1:], expect[:, 1:]) and torch.equal(coarse[parent][:, 0], fine[:, 0])
        a = fine[:, 1:] - 2 * coarse[parent][:, 1:]
        slot = a[:, 0] * 4 + a[:, 1] * 2 + a[:, 2]
        for sl in range(8):
            seg = d.fine_idx[d.slot_bounds[sl] : d.slot_bounds[sl + 1]]
            assert bool((slot[seg] == sl).all())
            # the child table points back at the grouped position of that child
            has = (d.child_table[:, sl] < len(fine)).nonzero().squeeze(1)
            child = d.fine_idx[d.child_table[has, sl]]
            assert torch.equal(parent[child], has) and bool((slot[child] == sl).all())
        assert torch.equal(d.fine_idx[d.inv], torch.arange(len(fine)))
        assert int((d.child_table < len(fine)).sum()) == len(fine)


def test_maps_for_real_looking_scene_and_errors():
    v = voxelize(torch.from_numpy(lidar_like_scene(0, beams=16, azimuth_steps=360)), 0.2)
    maps = build_kernel_maps(v.coords, 5)
    assert [len(c) for c in maps.coords] == sorted([len(c) for c in maps.coords], reverse=True)
    avg = (maps.subm_map(0).num_pairs + len(v)) / len(v)
    assert 1.5 < avg < 27
    with pytest.raises(ValueError, match="duplicate"):
        build_kernel_maps(torch.zeros((2, 4), dtype=torch.long))
    with pytest.raises(ValueError, match="odd"):
        build_kernel_maps(v.coords, 2, kernel_sizes=(4,))
    with pytest.raises(ValueError, match="hashable range"):
        build_kernel_maps(torch.tensor([[0, 10**6, 0, 0]]))
    empty = build_kernel_maps(torch.zeros((0, 4), dtype=torch.long), 3)
    assert [len(c) for c in empty.coords] == [0, 0, 0]


def test_maps_move_between_devices_unchanged():
    maps = build_kernel_maps(_random_coords(seed=5), 3)
    moved = maps.to("cpu")
    assert moved is not maps and all(torch.equal(a, b) for a, b in zip(maps.flat_tensors(), moved.flat_tensors()))


@pytest.mark.parametrize("k", [3, 5])
def test_bags_list_every_term_of_every_row(k):
    """The matmul-first layout: per level row, its centre then its neighbours as ``in * K + offset``
    (a second kernel size has its own row order, mapped back to the level's)."""
    coords = _random_coords(seed=3)
    maps = build_kernel_maps(coords, num_levels=1, kernel_sizes=(3, 5))
    level = maps.coords[0]
    brute = _brute_pairs(level, k)
    flat, starts = maps.subm_map(0, k).bag()
    ends = torch.cat([starts[1:], torch.tensor([len(flat)])])
    got = {}
    for o in range(len(level)):
        terms = flat[starts[o] : ends[o]].tolist()
        assert terms[0] == o * k**3 + k**3 // 2
        for t in terms:
            got[(o, t % k**3)] = t // k**3
    assert got == brute


def test_matmul_first_bf16_equals_per_offset():
    """The bf16 inference form (one matmul over all offsets + a gather-sum) against fp32."""
    from clip2scene_ros.sparse import ops

    coords = _random_coords(seed=4)
    maps = build_kernel_maps(coords, num_levels=1, kernel_sizes=(3, 5))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(coords), 16, generator=g)
    for k in (3, 5):
        w = torch.randn(k**3, 16, 8, generator=g) / 8
        m = maps.subm_map(0, k)
        with torch.no_grad():
            ref = ops.subm_conv(x.bfloat16().float(), w.bfloat16().float(), None, m)
            assert ops._matmul_first(x.bfloat16(), w, m)
            got = ops.subm_conv(x.bfloat16(), w.bfloat16(), None, m, acc_out=True)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, rtol=0.02, atol=0.02)


def test_bagged_fp32_equals_per_offset(monkeypatch):
    """fp32 inference (one gather, per-offset matmuls, one gather-sum per row) = the per-offset adds."""
    from clip2scene_ros.sparse import ops

    coords = _random_coords(seed=5)
    maps = build_kernel_maps(coords, num_levels=1, kernel_sizes=(3, 5))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(coords), 6, generator=g)
    for k in (3, 5):
        w = torch.randn(k**3, 6, 5, generator=g)
        m = maps.subm_map(0, k)
        with torch.no_grad():
            got = ops.subm_conv(x, w, None, m)
            monkeypatch.setattr(ops, "FP32_BAGGED", False)
            ref = ops.subm_conv(x, w, None, m)
            monkeypatch.setattr(ops, "FP32_BAGGED", True)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_split_runs_finds_the_least_padding():
    """The dynamic programme gives the same least padded size as trying every set of cuts."""
    import itertools
    import random

    from clip2scene_ros.sparse.kmap import split_runs

    def cost(sizes, starts, weights):
        prefix = list(itertools.accumulate(weights, initial=0))
        ends = [*starts[1:], len(sizes)]
        return sum((prefix[e] - prefix[a]) * sizes[a] for a, e in zip(starts, ends))

    rng = random.Random(0)
    for trial in range(200):
        n, parts = rng.randint(1, 11), rng.randint(1, 4)
        sizes = sorted((rng.randint(0, 60) for _ in range(n)), reverse=True)
        weights = [rng.randint(1, 9) for _ in range(n)] if trial % 2 else [1] * n
        starts = split_runs(sizes, parts, weights if trial % 2 else None)
        assert starts[0] == 0 and starts == sorted(set(starts)) and len(starts) <= parts
        brute = min(
            cost(sizes, [0, *cuts], weights)
            for k in range(min(parts, n))
            for cuts in itertools.combinations(range(1, n), k)
        )
        assert cost(sizes, starts, weights) == brute


@pytest.mark.parametrize("seed", [0, 1])
def test_padded_layout_same_from_the_library_and_from_torch(monkeypatch, seed):
    """pad_pairs fills its layout with the fused kernels' library where built, else with torch
    operators: both give the same graph inputs, and every pair lands once, in ascending output
    row within its offset, in its row's table."""
    from clip2scene_ros.sparse import kmap, native, padded_tensors_from_tables

    if not native.available():
        pytest.skip(f"fused CPU kernels not built: {native._failed}")
    pts = torch.from_numpy(lidar_like_scene(seed, beams=16, azimuth_steps=400))
    maps = native.build_table_maps(voxelize(pts, 0.2).coords, 4)
    calls = []
    real_pad = kmap._native_pad
    monkeypatch.setattr(kmap, "_native_pad", lambda *a: calls.append(1) or real_pad(*a))
    fast, rank_fast = padded_tensors_from_tables(maps)
    assert calls, "the library was not used"
    monkeypatch.setattr(kmap, "_native_pad", lambda *a: False)
    slow, rank_slow = padded_tensors_from_tables(maps)
    assert torch.equal(rank_fast, rank_slow) and len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
    # level 0: each non-centre pair once in the tables; its product row holds its input row
    p = kmap.PaddedMaps.from_flat(fast, 4).subm[0]
    flat = torch.cat([t.reshape(-1) for t in p.pidx])
    entries = torch.cat([t.reshape(-1) for t in p.ptable])
    used = entries[entries < flat.numel()]
    pairs = maps.subm_map(0).pairs
    assert used.numel() == pairs.p_out.numel() - pairs.num_rows  # the centre offset is a Gemm
    assert used.unique().numel() == used.numel()
    # within each offset's row of padded pairs, output rows ascend and padding comes last
    row_of = torch.full((flat.numel() + 1,), -1, dtype=torch.long)
    r0 = 0
    for t in p.ptable:
        rows = torch.arange(r0, r0 + t.shape[1]).expand_as(t)
        row_of[t.reshape(-1)] = rows.reshape(-1)
        r0 += t.shape[1]
    row_of = row_of[:-1]
    start = 0
    for g in p.pidx:
        block = row_of[start : start + g.numel()].view(g.shape)
        start += g.numel()
        for line in block:
            real = line[line >= 0]
            assert bool((line[: real.numel()] >= 0).all()) and bool((real[1:] > real[:-1]).all())
