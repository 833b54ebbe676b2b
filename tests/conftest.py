"""Shared pytest fixtures: real sample data, isolated ROS 2 domains, thread limits."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("CLIP2SCENE_REAL_DATA", REPO_ROOT.parent / "shared" / "data" / "real"))

# Each test that talks over DDS gets its own domain; xdist workers get disjoint ranges.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
_DOMAIN_IDS = itertools.count(11 + 30 * _WORKER)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Root of ../shared/data/real; tests using it are skipped when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real sensor samples not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def new_domain_id():
    """A callable giving a fresh ROS_DOMAIN_ID (as a string) for module-scoped fixtures."""
    return lambda: str(next(_DOMAIN_IDS) % 100 + 1)


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for a test that starts ROS processes: own domain, localhost discovery only.

    The returned dict is also applied to this process (for in-process rclpy participants).
    """
    from clip2scene_ros.resources import configure_ros_environment

    configure_ros_environment()
    domain = str(next(_DOMAIN_IDS) % 100 + 1)
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread in every test: spconv CPU (our numerical oracle) is only correct at one
    thread, and the suite shares 2 cores with ROS node processes. Benchmarks measure threads."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
