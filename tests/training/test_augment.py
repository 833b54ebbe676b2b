"""Point augmentation: order and count kept, each transform does what it says, config validation."""

from __future__ import annotations

import numpy as np
import pytest
from clip2scene_training.augment import AugmentConfig, augment
from clip2scene_training.trainer import augment_points


def _cloud(n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.c_[rng.uniform(-30, 30, (n, 2)), rng.uniform(-0.5, 3, n), rng.uniform(0, 1, n)].astype(np.float32)


def test_default_is_rotation_and_flips_about_z():
    p = _cloud()
    out = augment_points(p, np.random.default_rng(1))
    assert out.shape == p.shape and out.dtype == p.dtype
    np.testing.assert_allclose(np.linalg.norm(out[:, :2], axis=1), np.linalg.norm(p[:, :2], axis=1), rtol=1e-5)
    np.testing.assert_array_equal(out[:, 2:], p[:, 2:])  # z and intensity untouched
    # seeded: same generator state, same result
    np.testing.assert_array_equal(out, augment(p, np.random.default_rng(1)))


def test_full_recipe_keeps_order_and_drops_to_nan():
    p = _cloud()
    cfg = AugmentConfig.from_dict(
        {"scale": [0.9, 1.1], "jitter_std_m": 0.01, "height_shift_m": 0.2, "tilt_deg": 2.0, "point_dropout": 0.5}
    )
    out = augment(p, np.random.default_rng(3), cfg)
    assert out.shape == p.shape
    dropped = np.isnan(out[:, 0])
    assert np.isnan(out[dropped, :3]).all() and 0 < dropped.mean() < 0.5
    kept = ~dropped
    ratio = np.linalg.norm(out[kept, :3], axis=1).mean() / np.linalg.norm(p[kept, :3], axis=1).mean()
    assert 0.88 < ratio < 1.12
    np.testing.assert_array_equal(out[:, 3], p[:, 3])
    no_rot = AugmentConfig(rotate=False, flip=False, height_shift_m=0.3)
    shifted = augment(p, np.random.default_rng(4), no_rot)
    dz = shifted[:, 2] - p[:, 2]
    assert np.ptp(dz) < 1e-5 and abs(dz[0]) <= 0.3
    np.testing.assert_array_equal(shifted[:, :2], p[:, :2])


def test_beam_dropout_removes_whole_elevation_bands():
    p = _cloud()
    out = augment(p, np.random.default_rng(5), AugmentConfig(rotate=False, flip=False, beam_dropout=0.9))
    r = np.linalg.norm(p[:, :2], axis=1)
    band = np.floor(np.degrees(np.arctan2(p[:, 2], r)) / 0.5)
    lost = np.isnan(out[:, 0])
    assert lost.any()
    for b in np.unique(band[lost]):
        assert lost[band == b].all()


@pytest.mark.parametrize(
    "bad,match",
    [({"scale": [1.2, 1.0]}, "scale"), ({"point_dropout": 1.0}, "point_dropout"), ({"spin": True}, "unknown")],
)
def test_bad_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig.from_dict(bad)
