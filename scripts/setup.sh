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
      "$ROOT"/scripts/ros_interfaces/*/msg/*.msg 2>/dev/null | sha256sum | cut -d' ' -f1
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
SHARE=$VENV/share/clip2scene_ros
mkdir -p "$SHARE" "$VENV/share/ament_index/resource_index/packages"
ln -sfn "$ROOT/package.xml" "$SHARE/package.xml"
ln -sfn "$ROOT/launch" "$SHARE/launch"
ln -sfn "$ROOT/config" "$SHARE/config"
touch "$VENV/share/ament_index/resource_index/packages/clip2scene_ros"
"$VENV/bin/python" -c "import clip2scene_ros, clip2scene_training, clip2scene_interfaces.srv, tf2_msgs.msg, rclpy" \
  || { echo "[setup] import check failed" >&2; exit 1; }
echo "$HASH" > "$STAMP"
echo "[setup] done: $VENV"
