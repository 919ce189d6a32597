#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every CTest entry
# (unit tests, mpirun tests, command-line and end-to-end tests).
# Extra arguments go to ctest (e.g. -R data).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="${SMOE_BUILD_DIR:-$root/build}"

"$here/build.sh"
cd "$build"
ctest --output-on-failure --timeout 1800 "$@"
