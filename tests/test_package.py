"""Package metadata, installed files and the CLI entry points are consistent."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _package_xml_version() -> str:
    return re.search(r"<version>([^<]+)</version>", (REPO / "package.xml").read_text()).group(1)


def test_versions_agree():
    setup_version = (
        subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert setup_version == _package_xml_version()
    assert distribution("clip2scene_ros").version == _package_xml_version()
    interfaces_xml = (REPO / "clip2scene_interfaces" / "package.xml").read_text()
    assert re.search(r"<version>([^<]+)</version>", interfaces_xml).group(1) == _package_xml_version()


def test_package_xml_declares_what_the_code_imports():
    xml = (REPO / "package.xml").read_text()
    declared = set(re.findall(r"<(?:exec_|build_|)depend>([^<]+)</", xml))
    # Every ROS package imported anywhere in the code must be declared (and vice versa for msgs).
    imported = set()
    for path in list((REPO / "clip2scene_ros").rglob("*.py")) + list((REPO / "launch").glob("*.py")):
        for m in re.finditer(r"^\s*(?:from|import)\s+([a-z_0-9]+)", path.read_text(), re.M):
            imported.add(m.group(1))
    ros_packages = {
        "rclpy",
        "std_msgs",
        "sensor_msgs",
        "geometry_msgs",
        "visualization_msgs",
        "diagnostic_msgs",
        "builtin_interfaces",
        "clip2scene_interfaces",
        "launch",
        "launch_ros",
        "rcl_interfaces",
        "tf2_msgs",
        "ament_index_python",
        "sensor_msgs_py",
        "message_filters",
        "cv_bridge",
    }
    missing = (imported & ros_packages) - declared
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"
    assert "ament_python" in xml and 'format="3"' in xml


def test_every_console_entry_point_imports():
    eps = [ep for ep in distribution("clip2scene_ros").entry_points if ep.group == "console_scripts"]
    assert {ep.name for ep in eps} >= {"clip2scene", "segment_node"}
    for ep in eps:
        assert callable(ep.load()), ep


def test_wheel_installs_launch_config_and_ament_marker(tmp_path):
    """A regular (non-editable) install puts launch/ and config/ under share/clip2scene_ros."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("clip2scene_ros-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split("/data/", 1)[1] for n in names if ".data/data/" in n]
    assert "share/ament_index/resource_index/packages/clip2scene_ros" in data
    assert "share/clip2scene_ros/package.xml" in data
    for folder in ("launch", "config"):
        expected = {
            f"share/clip2scene_ros/{p.relative_to(REPO).as_posix()}"
            for p in (REPO / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        assert expected and expected <= set(data), sorted(expected - set(data))
    assert any(n.startswith("clip2scene_training/") for n in names), "training package missing from wheel"


def test_ament_index_finds_the_share_directory(monkeypatch):
    from ament_index_python.packages import get_package_share_directory

    from clip2scene_ros.resources import configure_ros_environment

    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    configure_ros_environment()
    share = Path(get_package_share_directory("clip2scene_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "config" / "dds" / "fastdds_shm_64mb.xml").is_file()


def test_cli_help_lists_existing_subcommands():
    from clip2scene_ros.cli.main import SUBCOMMANDS, _available

    out = subprocess.run(
        [str(Path(sys.executable).parent / "clip2scene"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    available = _available()
    for name in SUBCOMMANDS:
        listed = re.search(rf"^\s+{name}\s", out, re.M) is not None
        assert listed == (name in available), f"{name}: listed={listed}"


def test_cli_unknown_subcommand_fails_cleanly():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "clip2scene"), "no-such-command"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


@pytest.mark.parametrize("var", ["FASTDDS_DEFAULT_PROFILES_FILE"])
def test_commands_use_the_shipped_dds_profile(monkeypatch, var):
    from clip2scene_ros.resources import configure_ros_environment

    monkeypatch.delenv(var, raising=False)
    configure_ros_environment()
    import os

    assert Path(os.environ[var]).name == "fastdds_shm_64mb.xml"
    monkeypatch.setenv(var, "/custom/profile.xml")
    configure_ros_environment()
    assert os.environ[var] == "/custom/profile.xml", "a user's own profile must win"


FAULTS_PER_FRAME = """
import resource, sys, threading
import numpy as np
from clip2scene_ros.resources import fix_malloc_thresholds, trim_heap
fix_malloc_thresholds(**({"mmap_bytes": 1 << 20} if sys.argv[1] == "small" else {}))
faults = []
def frames():  # a worker thread (its own malloc arena, like the node's), 16 MB buffers filled per frame
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            np.ones(4 << 20, np.float32).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    trim_heap()
t = threading.Thread(target=frames)
t.start()
t.join()
print(sorted(faults)[len(faults) // 2])
"""


def test_fixed_malloc_thresholds_reuse_frame_buffers_instead_of_faulting_them_in():
    # Buffers served by fresh mmap pages (a 1 MB threshold) fault every page in again on each frame,
    # which doubled the node's forward time; the default thresholds keep them in the heap.
    def median_faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_FRAME, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    small = median_faults("small")
    assert small >= 3  # one fault per buffer at least (transparent huge pages fault 2 MB at a time)
    assert median_faults("fixed") * 4 < small
