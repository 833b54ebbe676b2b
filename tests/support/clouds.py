"""Small random clouds for core tests that need points but no particular scene."""

from __future__ import annotations

import numpy as np


def random_cloud(n: int = 3000, seed: int = 0) -> np.ndarray:
    """[n, 4] float32 x y z intensity: 30 m x 30 m around the sensor, z in +-1.5 m, intensity 0..1."""
    rng = np.random.default_rng(seed)
    pts = np.zeros((n, 4), np.float32)
    pts[:, :2] = rng.uniform(-15, 15, (n, 2))
    pts[:, 2] = rng.uniform(-1.5, 1.5, n)
    pts[:, 3] = rng.uniform(0, 1, n)
    return pts
