#!/usr/bin/env bash
# One-command setup: apt packages, the project venv, pinned Python deps, the ROS wheels' CMake
# fix, lwd_msgs built from msg/ into the venv, and the project's packages (editable).
# Idempotent: every step is skipped when its inputs have not changed (stamps in .venv/.lwd-stamps).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${LWD_VENV:-$ROOT/.venv}
STAMPS=$VENV/.lwd-stamps
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# 1. System packages -------------------------------------------------------------------------
APT_PKGS=(mosquitto mosquitto-clients openssl chromium cmake g++ libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Virtual environment -----------------------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.10 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(not (3,10) <= sys.version_info[:2] <= (3,12))'; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "need Python 3.10-3.12 (the ROS 2 Kilted wheels support those)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
hash_of() { for f in "$@"; do [ -f "$f" ] && cat "$f"; done | sha256sum | cut -c1-32; }

# 3. Pinned Python dependencies --------------------------------------------------------------
REQS=(requirements/robot.txt requirements/ros-build.txt requirements/learner.txt requirements/export.txt requirements/dev.txt)
h=$(hash_of constraints.txt "${REQS[@]}")
if ! stamp_ok deps "$h"; then
  log "installing Python dependencies (pinned by constraints.txt)"
  "${PIP[@]}" install --upgrade pip >/dev/null
  "${PIP[@]}" install -c constraints.txt $(printf -- '-r %s ' "${REQS[@]}")
  echo "$h" > "$STAMPS/deps"
fi

# 4. CMake path fix for the ROS wheels (cheap, idempotent) ------------------------------------
"$VENV/bin/python" scripts/fix_ros_wheel_cmake.py >/dev/null

# 5. lwd_msgs from msg/ ----------------------------------------------------------------------
h=$(hash_of msg/* ros2_ws/src/lwd_msgs/CMakeLists.txt ros2_ws/src/lwd_msgs/package.xml "$STAMPS/deps")
if ! stamp_ok lwd_msgs "$h"; then
  log "building lwd_msgs from msg/ into the venv"
  BUILD=$(mktemp -d)
  (
    export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
    cmake -S ros2_ws/src/lwd_msgs -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >"$BUILD/cmake.log" 2>&1 &&
    cmake --build "$BUILD" -j"$(nproc)" >>"$BUILD/cmake.log" 2>&1 &&
    cmake --install "$BUILD" >>"$BUILD/cmake.log" 2>&1
  ) || { tail -40 "$BUILD/cmake.log" >&2; echo "lwd_msgs build failed (log: $BUILD/cmake.log)" >&2; exit 1; }
  rm -rf "$BUILD"
  echo "$h" > "$STAMPS/lwd_msgs"
fi

# 6. The project's own packages, editable -----------------------------------------------------
LOCAL_PKGS=(ros2_ws/src/lwd_protocol ros2_ws/src/lwd_fleet learner)
[ -f ros2_ws/src/lwd_sim/setup.py ] && LOCAL_PKGS+=(ros2_ws/src/lwd_sim)
pkg_files=(); for p in "${LOCAL_PKGS[@]}"; do pkg_files+=("$p/setup.py" "$p/pyproject.toml"); done
h=$(hash_of "${pkg_files[@]}" "$STAMPS/deps")
if ! stamp_ok local "$h"; then
  log "installing project packages (editable): ${LOCAL_PKGS[*]}"
  "${PIP[@]}" install --no-deps --no-build-isolation $(printf -- '-e %s ' "${LOCAL_PKGS[@]}") >"$STAMPS/local.log" 2>&1 ||
    { tail -30 "$STAMPS/local.log" >&2; echo "installing the project packages failed" >&2; exit 1; }
  echo "$h" > "$STAMPS/local"
fi

"$VENV/bin/python" - <<'PY'
import lwd_msgs.msg, lwd_protocol, lwd_learner, lwd_fleet  # noqa: F401  smoke: everything imports
PY
log "ready: $VENV"
