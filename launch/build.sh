#!/usr/bin/env bash
# Installs the dependencies (Debian packages, idempotent), configures and
# builds smoe into build/ (or $SMOE_BUILD_DIR). Extra arguments go to CMake.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="${SMOE_BUILD_DIR:-$root/build}"

"$here/install-deps.sh"

# ccache serves repeated builds; these settings let it cache files that use
# the precompiled header.
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
elif [ $# -gt 0 ]; then
  cmake "$build" "$@"
fi
# Two compile jobs on two cores; libtorch files take ~1 GB each, so never more
# jobs than cores.
jobs="${SMOE_BUILD_JOBS:-$(nproc)}"
start=$(date +%s)
cmake --build "$build" -j "$jobs"
echo "build: done in $(( $(date +%s) - start )) s ($build/bin)"
