#!/usr/bin/env bash
# Idempotent set-up: creates .venv, installs pinned dependencies, builds clip2scene_interfaces
# into the venv with cmake and installs clip2scene_ros. A second run does nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
STAMP=$VENV/.clip2scene-setup.stamp

# Hash of every input that changes what gets installed; re-run only when it changes.
inputs_hash() {
  cat "$ROOT/requirements.txt" "$ROOT/scripts/setup.sh" "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" \
      "$ROOT/package.xml" "$ROOT/clip2scene_interfaces/package.xml" \
      "$ROOT/clip2scene_interfaces/CMakeLists.txt" "$ROOT"/clip2scene_interfaces/srv/*.srv \
      "$ROOT"/scripts/ros_interfaces/*/package.xml "$ROOT"/scripts/ros_interfaces/*/CMakeLists.txt \
      "$ROOT"/scripts/ros_interfaces/*/msg/*.msg "$ROOT"/launch/* 2>/dev/null | sha256sum | cut -d' ' -f1
}
HASH=$(inputs_hash)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  echo "[setup] .venv is up to date ($VENV)"
  exit 0
fi

# System libraries: open3d's wheel needs libusb at import time; cmake/g++ build the interfaces.
need_apt=()
[ -e /usr/lib/x86_64-linux-gnu/libusb-1.0.so.0 ] || [ -e /lib/x86_64-linux-gnu/libusb-1.0.so.0 ] \
  || ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0 || need_apt+=(libusb-1.0-0)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[setup] please run: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip prints a warning per package for local mirror folders it lacks; hide only those lines
# (process substitution keeps pip's own exit status).
pip_q() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v '^WARNING: Location' >&2); }
pip_q install -q "setuptools>=70,<80" wheel
echo "[setup] installing Python dependencies (first run takes a few minutes)"
pip_q install -q -r "$ROOT/requirements.txt"
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }

# Optional torchsparse 1.4 (CPU build, a numerical reference for tests) from the shared wheel folder;
# its extension binds CPython 3.11 + torch 2.14.1, so any other venv goes without it (tests skip).
TS_DIR=${TORCHSPARSE_WHEEL_DIR:-$ROOT/../shared/wheels/torchsparse}
TS_WHEEL=$TS_DIR/torchsparse-1.4.0-cp311-cp311-linux_x86_64.whl
if [ -f "$TS_WHEEL" ]; then
  if ! "$VENV/bin/python" -c "import sys, torch; sys.exit(sys.version_info[:2] != (3, 11) or torch.__version__.split('+')[0] != '2.14.1')"; then
    echo "[setup] skipping torchsparse: its wheel needs CPython 3.11 and torch 2.14.1"
  elif (cd "$TS_DIR" && grep " $(basename "$TS_WHEEL")\$" SHA256SUMS | sha256sum -c --quiet -); then
    pip_q install -q --no-deps "$TS_WHEEL"
  else
    echo "[setup] skipping torchsparse: $TS_WHEEL does not match its SHA256SUMS" >&2
  fi
fi

# ROS 2 command line + message helpers (ros2 launch/run/topic/service/param, launch_ros,
# sensor_msgs_py, message_filters, cv_bridge): pinned pure-Python wheels from the shared kit folder,
# unless a ROS install already provides them. Without the kit everything else works (CLI tests skip).
KIT_DIR=${ROS2CLI_WHEEL_DIR:-$ROOT/../shared/wheels/ros2cli}
KIT_PINS=(launch==3.7.1 launch-xml==3.7.1 launch-yaml==3.7.1 launch-ros==0.28.0 ros2launch==0.28.0
  ros2cli==0.36.1 ros2run==0.36.1 ros2service==0.36.1 ros2topic==0.36.1 ros2node==0.36.1
  ros2param==0.36.1 ros2pkg==0.36.1 ros2interface==0.36.1 rosidl-runtime-py==0.14.0
  sensor-msgs-py==5.4.2 message-filters==6.0.6 cv-bridge==3.4.0)
if "$VENV/bin/python" -c "import launch_ros, ros2cli, sensor_msgs_py, message_filters, cv_bridge" 2>/dev/null; then
  echo "[setup] ros2 command line and message helpers: already provided"
elif [ -f "$KIT_DIR/SHA256SUMS" ]; then
  if (cd "$KIT_DIR" && sha256sum -c --quiet SHA256SUMS); then
    echo "[setup] installing the ros2 command line kit from $KIT_DIR"
    pip_q install -q osrf-pycommon==2.0.2 psutil==7.2.2 packaging
    pip_q install -q --no-index --find-links "$KIT_DIR" "${KIT_PINS[@]}"
  else
    echo "[setup] skipping the ros2 command line kit: $KIT_DIR does not match its SHA256SUMS" >&2
  fi
else
  echo "[setup] no ros2 command line kit at $KIT_DIR: ros2 launch/run are unavailable (clip2scene segment works)"
fi

# The ROS wheels were built in a manylinux container and hard-code its include paths.
PYINC=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$("$VENV/bin/python" -c "import numpy; print(numpy.get_include())")
{ grep -rl '/opt/python/cp311-cp311' --include='*.cmake' "$VENV/share" 2>/dev/null || true; } | xargs -r sed -i \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/core/include#$NPINC#g"

# Interface packages are generated C/Python code: built with cmake and installed into the venv.
BUILD_ROOT=$(mktemp -d)
trap 'rm -rf "$BUILD_ROOT"' EXIT
build_interfaces() {  # $1: package source dir
  local name build
  name=$(basename "$1")
  build=$BUILD_ROOT/$name
  echo "[setup] building $name into the venv"
  AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" \
    cmake -S "$1" -B "$build" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >"$BUILD_ROOT/$name.configure.log" 2>&1 \
    || { cat "$BUILD_ROOT/$name.configure.log"; exit 1; }
  PATH="$VENV/bin:$PATH" cmake --build "$build" -j2 >"$BUILD_ROOT/$name.build.log" 2>&1 \
    || { tail -50 "$BUILD_ROOT/$name.build.log"; exit 1; }
  cmake --install "$build" >/dev/null
}
build_interfaces "$ROOT/clip2scene_interfaces"
# Standard interfaces the PyPI wheels lack (a ROS install provides them): field-for-field subsets.
for pkg in "$ROOT"/scripts/ros_interfaces/*/; do
  "$VENV/bin/python" -c "import $(basename "$pkg").msg" 2>/dev/null || build_interfaces "${pkg%/}"
done

echo "[setup] installing clip2scene_ros (editable) and its share/ files"
# Editable install: code edits take effect without reinstalling (clip2scene_training maps to
# training/clip2scene_training/). PEP 660 editable installs skip data_files, so link share/clip2scene_ros to the
# source tree instead, as `colcon build --symlink-install` does; the ament index then finds it.
pip_q install -q --no-deps --no-build-isolation -e "$ROOT"
# `ros2 launch PKG FILE` searches share/PKG with os.walk, which does not enter symlinked folders:
# launch/ is a real folder of linked files; config/ is only opened by path, so a folder link works.
SHARE=$VENV/share/clip2scene_ros
mkdir -p "$SHARE" "$VENV/share/ament_index/resource_index/packages"
ln -sfn "$ROOT/package.xml" "$SHARE/package.xml"
[ -L "$SHARE/launch" ] && rm "$SHARE/launch"
mkdir -p "$SHARE/launch"
find "$SHARE/launch" -maxdepth 1 -type l -delete
for f in "$ROOT"/launch/*; do ln -sfn "$f" "$SHARE/launch/$(basename "$f")"; done
ln -sfn "$ROOT/config" "$SHARE/config"
touch "$VENV/share/ament_index/resource_index/packages/clip2scene_ros"
# `ros2 run` and launch_ros look for executables only in <prefix>/lib/<package>/.
mkdir -p "$VENV/lib/clip2scene_ros"
ln -sfn ../../bin/segment_node "$VENV/lib/clip2scene_ros/segment_node"
"$VENV/bin/python" -c "import clip2scene_ros, clip2scene_training, clip2scene_interfaces.srv, tf2_msgs.msg, rclpy" \
  || { echo "[setup] import check failed" >&2; exit 1; }
# The fused fp32 CPU sparse kernels, compiled for this machine into the user cache (the node would
# otherwise compile them on its first frame); without g++ the engine runs its torch path.
"$VENV/bin/python" -c "from clip2scene_ros.sparse import native; print('[setup] fused CPU kernels:', native.build())" \
  || echo "[setup] fused CPU kernels not built (no working g++): the torch path runs instead" >&2
echo "$HASH" > "$STAMP"
echo "[setup] done: $VENV"
