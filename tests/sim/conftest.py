"""Shared helpers for the simulator tests: small, noise-free configurations."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def o3d_available():
    try:
        import open3d  # noqa: F401
    except ImportError as e:  # libusb missing: setup.sh installs it
        pytest.skip(f"open3d unavailable: {e}")


@pytest.fixture
def small_config(o3d_available):
    from clip2scene_ros.sim import SimConfig

    return SimConfig.default().with_overrides(
        **{
            "cameras.width": 200,
            "cameras.height": 112,
            "lidar.range_noise_std_m": 0.0,
            "lidar.dropout": 0.0,
            "threads": 1,
        }
    )
