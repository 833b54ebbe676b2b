"""A ROS 2 user's workflow: colcon builds both packages from a workspace (README command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_colcon_builds_both_packages(tmp_path, new_domain_id):
    venv = Path(sys.prefix)
    colcon = venv / "bin" / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment")
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv))
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    # The README's command, with build/install/log kept out of the source tree.
    cmd = [
        str(colcon), "--log-base", str(tmp_path / "log"), "build",
        "--base-paths", str(REPO), str(REPO / "clip2scene_interfaces"),
        "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
        "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 packages finished" in proc.stdout
    install = tmp_path / "install"
    # `ros2 run clip2scene_ros segment_node` looks for executables in lib/<package>.
    for exe in ("segment_node", "clip2scene"):
        assert (install / "clip2scene_ros" / "lib" / "clip2scene_ros" / exe).is_file()
    share = install / "clip2scene_ros" / "share" / "clip2scene_ros"
    assert (share / "package.xml").is_file()
    assert (share / "config" / "dds" / "fastdds_shm_64mb.xml").is_file()
    index = install / "clip2scene_ros" / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "clip2scene_ros").is_file()
    # The generated service type imports from the colcon install (PYTHONPATH + LD_LIBRARY_PATH).
    iface = install / "clip2scene_interfaces"
    site = next(iface.glob("lib/python3*/site-packages"))
    check_env = dict(env, PYTHONPATH=str(site), LD_LIBRARY_PATH=f"{iface / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}")
    out = subprocess.run(
        [sys.executable, "-c", "from clip2scene_interfaces.srv import QueryText as Q, _query_text as m; "
         "print(m.__file__); print(sorted(Q.Request.get_fields_and_field_types()))"],
        env=check_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert str(iface) in out.stdout and "'text'" in out.stdout and "'threshold'" in out.stdout
    # ros2 finds the colcon-installed package: its executable and its launch file (arguments only,
    # nothing started; tests/nodes/test_ros2_cli.py runs the node through the venv's install).
    ros2 = venv / "bin" / "ros2"
    if ros2.exists():
        pkg = install / "clip2scene_ros"
        pkg_site = next(pkg.glob("lib/python3*/site-packages"))
        ros_env = dict(check_env, AMENT_PREFIX_PATH=f"{pkg}{os.pathsep}{iface}{os.pathsep}{venv}",
                       PYTHONPATH=f"{pkg_site}{os.pathsep}{site}")  # fmt: skip
        out = subprocess.run([str(ros2), "pkg", "executables", "clip2scene_ros"], env=ros_env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert "clip2scene_ros segment_node" in out.stdout, out.stdout + out.stderr
        out = subprocess.run([str(ros2), "launch", "clip2scene_ros", "segment.launch.py", "--show-args"], env=ros_env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0 and "'namespace':" in out.stdout and "'rviz':" in out.stdout, out.stdout + out.stderr
        _launch_from_the_workspace(ros2, ros_env, new_domain_id(), install)


def _launch_from_the_workspace(ros2: Path, env: dict, domain: str, install: Path) -> None:
    """`ros2 launch clip2scene_ros segment.launch.py` runs the colcon-installed node (shipped models),
    `ros2 service call /query_text` reaches it, and Ctrl-C ends the launch with status 0."""
    from clip2scene_ros.nodes.node_process import NodeProcess

    env = dict(env, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")  # fmt: skip
    proc = NodeProcess([str(ros2), "launch", "clip2scene_ros", "segment.launch.py", "namespace:=/c2s_colcon"], env)
    try:
        proc.wait_for_log(r"listening on /lidar/points", 240.0)
        # the node runs the workspace's copy of the package and its shipped student, not the venv's
        loaded = proc.wait_for_log(r"checkpoint=", 10.0)
        assert f"checkpoint={install}" in loaded, loaded
        out = subprocess.run(
            [str(ros2), "service", "call", "/c2s_colcon/query_text", "clip2scene_interfaces/srv/QueryText",
             "{text: 'a parked car'}"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "response:" in out.stdout, out.stdout + out.stderr + proc.log()[-2000:]
    finally:
        status = proc.stop(timeout=60.0)
        subprocess.run([str(ros2), "daemon", "stop"], env=env, capture_output=True, timeout=60)
    assert status == 0, proc.log()[-3000:]
