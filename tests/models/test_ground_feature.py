"""height_above_ground: a model input that follows the road's slope instead of the sensor's z."""

from __future__ import annotations

import numpy as np
import torch

from clip2scene_ros.models import create_model
from clip2scene_ros.models.ground import height_above_ground
from clip2scene_ros.models.inputs import InputSpec, encode_points, prepare_inputs
from clip2scene_ros.sparse import voxelize


def _sloped_street(grade: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 60 x 30 m ground rising ``grade`` along x, with a 1.5 m box (a car) standing on it."""
    g = rng.uniform([-30, -15], [30, 15], size=(20000, 2))
    ground = np.c_[g, grade * g[:, 0]]
    c = rng.uniform([9.0, 2.0, 0.2], [13.5, 3.8, 1.5], size=(2000, 3))
    car = np.c_[c[:, :2], grade * c[:, 0] + c[:, 2]]
    return np.r_[ground, car].astype(np.float32), np.r_[np.zeros(len(g)), np.ones(len(c))].astype(bool)


def test_height_follows_a_slope_and_ignores_reflections():
    rng = np.random.default_rng(0)
    pts, is_car = _sloped_street(0.04, rng)  # 4 %: the ground is 1.2 m higher at x = 30 than at 0
    # a cluster of returns 4 m below the road, as a reflection "through" a wet road gives
    ghost = (np.array([5.0, -3.0, 0.04 * 5.0 - 4.0]) + rng.normal(0, 0.05, size=(8, 3))).astype(np.float32)
    cloud = torch.from_numpy(np.r_[pts, ghost])
    v = voxelize(cloud, 0.2)
    h = height_above_ground(v.feats[:, :3], v.coords[:, 0], v.counts).numpy()[v.point_to_voxel.numpy()][: len(pts)]
    assert np.abs(pts[~is_car, 2]).max() > 1.1 and np.percentile(np.abs(h[~is_car]), 99) < 0.1
    top = is_car & (pts[:, 2] - 0.04 * pts[:, 0] > 1.3)
    assert h[top].min() > 1.2  # the car's roof stays well above its ground
    # clouds of a batch get their own ground: a second, raised copy gives the same heights
    both = torch.from_numpy(np.r_[pts, pts + [0, 0, 3.0]])
    hb = height_above_ground(both, torch.cat([torch.zeros(len(pts)), torch.ones(len(pts))]).long()).numpy()
    np.testing.assert_allclose(hb[: len(pts)], hb[len(pts) :], atol=1e-5)


def test_model_reads_no_cloud_column_and_ignores_the_mount_height():
    torch.manual_seed(0)
    model = create_model("minkunet18_tiny", in_features=["height_above_ground"], embed_dim=16, voxel_size=0.2).eval()
    assert InputSpec.for_model(model.config).fields == ()  # clouds need x, y, z only
    pts, _ = _sloped_street(0.03, np.random.default_rng(1))
    with torch.no_grad():
        a = encode_points(model, torch.from_numpy(pts))[0]["global"]
        # the same street seen from a sensor 3.2 m higher: 16 voxels, so every stride groups alike
        b = encode_points(model, torch.from_numpy(pts - np.float32([0, 0, 3.2])))[0]["global"]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    prepared = prepare_inputs(model.config, torch.from_numpy(pts))
    assert prepared.feats.shape[1] == 1
