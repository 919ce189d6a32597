#!/usr/bin/env bash
# The torch-free unit tests under sanitizers: core, the thread and MPI-free
# communicator, the converters and the coordinator-worker scheduler built
# with AddressSanitizer + UndefinedBehaviorSanitizer, and the thread
# communicator and the scheduler with ThreadSanitizer. Any report fails.
# (libtorch and OpenMP are not instrumented, so the torch layers are left to
# the ordinary test run, and so is the NCCL plugin, which loads CUDA.) Builds
# in build-asan/ and build-tsan/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
"$here/install-deps.sh"
jobs="${SMOE_BUILD_JOBS:-$(nproc)}"

run_suite() {  # name sanitizers targets...
  local name=$1 sanitize=$2
  shift 2
  local dir="$root/build-$name"
  if [ ! -f "$dir/build.ninja" ]; then
    cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSMOE_SANITIZE="$sanitize" -DSMOE_WITH_NCCL=OFF \
      -DSMOE_BUILD_BENCH=OFF >/dev/null
  fi
  cmake --build "$dir" -j "$jobs" --target "$@"
  for t in "$@"; do
    echo "sanitizers: $name $t"
    "$dir/bin/$t" --gtest_brief=1
  done
}

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
export SMOE_SOURCE_DIR="$root"
run_suite asan address,undefined test_core test_comm test_data_tools test_scheduler
run_suite tsan thread test_comm test_scheduler
echo "sanitizers: clean"
