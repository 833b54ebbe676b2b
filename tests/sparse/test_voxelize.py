import numpy as np
import pytest
import torch

from clip2scene_ros.sparse import COORD_LIMIT, voxelize
from clip2scene_ros.sparse.samples import lidar_like_scene


def test_mean_pooling_and_inverse_map_match_a_python_reference():
    pts = torch.from_numpy(lidar_like_scene(1, beams=8, azimuth_steps=180))
    v = voxelize(pts, 0.5)
    ref: dict[tuple, list] = {}
    for p in pts.tolist():
        ref.setdefault(tuple(int(np.floor(c / 0.5)) for c in p[:3]), []).append(p)
    assert len(v) == len(ref)
    got = {tuple(c[1:]): f for c, f in zip(v.coords.tolist(), v.feats)}
    for key, rows in ref.items():
        torch.testing.assert_close(got[key], torch.tensor(rows).mean(0), rtol=0, atol=1e-5)
    # every point maps to the voxel containing it
    vox_of_point = v.coords[v.point_to_voxel, 1:]
    assert torch.equal(vox_of_point, torch.floor(pts[:, :3] / 0.5).long())
    assert v.counts.sum() == len(pts) and v.num_dropped == 0


def test_batched_clouds_keep_batches_apart_and_coords_are_sorted():
    a = torch.tensor([[0.05, 0.05, 0.05, 1.0], [0.06, 0.01, 0.02, 3.0]])
    b = torch.tensor([[0.05, 0.05, 0.05, 5.0]])
    v = voxelize([a, b], 0.1)
    assert v.coords.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0]]
    assert v.feats[:, 3].tolist() == [2.0, 5.0]
    assert v.point_to_voxel.tolist() == [0, 0, 1]
    # same result from a concatenated cloud with a batch vector
    w = voxelize(torch.cat([a, b]), 0.1, batch=torch.tensor([0, 0, 1]))
    assert torch.equal(w.coords, v.coords) and torch.equal(w.feats, v.feats)
    pts = torch.from_numpy(lidar_like_scene(2, beams=8, azimuth_steps=90))
    c = voxelize([pts, pts], 0.3).coords
    keys = [tuple(r) for r in c.tolist()]
    assert keys == sorted(keys)


def test_nan_and_inf_points_are_dropped_and_counted():
    pts = torch.tensor([[0.0, 0, 0, 1], [np.nan, 0, 0, 1], [0.0, np.inf, 0, 1], [0.0, 0, 0, np.nan], [0.01, 0, 0, 3]])
    v = voxelize(pts, 0.1)
    assert v.num_dropped == 3
    assert v.point_to_voxel.tolist() == [0, -1, -1, -1, 0]
    torch.testing.assert_close(v.feats, torch.tensor([[0.005, 0.0, 0.0, 2.0]]))


def test_empty_and_all_invalid_clouds_give_empty_results():
    for pts in (torch.zeros((0, 4)), torch.full((3, 4), np.nan)):
        v = voxelize(pts, 0.1)
        assert len(v) == 0 and v.coords.shape == (0, 4) and v.feats.shape == (0, 4)
        assert v.point_to_voxel.tolist() == [-1] * len(pts)


def test_numpy_input_separate_features_and_anisotropic_voxels():
    xyz = np.array([[0.1, 0.1, 0.1], [0.15, 0.9, 0.1]], np.float32)
    v = voxelize(xyz, (0.2, 1.0, 0.5), features=np.array([1.0, 3.0], np.float32))
    assert v.coords.tolist() == [[0, 0, 0, 0]]
    assert v.feats[0, 3].item() == 2.0


def test_bad_input_errors_name_the_fix():
    with pytest.raises(ValueError, match="hashable range"):
        voxelize(torch.tensor([[1e5, 0.0, 0.0, 0.0]]), 0.1)
    with pytest.raises(ValueError, match=str(COORD_LIMIT)):
        voxelize(torch.tensor([[0.0, -1e4, 0.0, 0.0]]), 0.01)
    with pytest.raises(ValueError, match="one feature row per point"):
        voxelize(torch.zeros((5, 3)), 0.1, features=torch.zeros(4))
    with pytest.raises(ValueError, match="one batch index per point"):
        voxelize(torch.zeros((5, 3)), 0.1, batch=torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[P, 3\+F\]"):
        voxelize(torch.zeros((5, 2)), 0.1)
    with pytest.raises(ValueError, match="positive"):
        voxelize(torch.zeros((5, 3)), 0.0)


def test_mean_pooling_is_differentiable():
    pts = torch.tensor([[0.0, 0, 0, 1], [0.01, 0, 0, 3]], requires_grad=True)
    v = voxelize(pts, 0.1)
    v.feats[:, 3].sum().backward()
    assert pts.grad[:, 3].tolist() == [0.5, 0.5]
