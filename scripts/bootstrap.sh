#!/usr/bin/env bash
# Create .venv with the kit and its test dependencies, after checking the build toolchain.
# Usage: scripts/bootstrap.sh   (idempotent; re-run after pulling)
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' not found (fix: $2)" >&2; exit 2; }; }
need python3 "install Python 3.10+ (Debian: apt-get install python3 python3-venv)"
need cmake "install CMake 3.14+ (Debian: apt-get install cmake)"
need c++ "install a C++17 compiler (Debian: apt-get install g++)"
need git "install git (Debian: apt-get install git)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "error: python3 is $(python3 -V 2>&1), the kit needs 3.10+ (fix: install Python 3.10 or newer)" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --require-hashes -r configs/requirements.lock
.venv/bin/python -m pip install --quiet --require-hashes --no-deps -r configs/requirements-ci.lock
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "ready: .venv/bin/invoke --list"
