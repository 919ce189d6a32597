#!/bin/sh
# smoe with the tests' fake accelerator loaded (runtime.device: privateuseone;
# tests/common/fake_accelerator.cpp), for timing it against the CPU:
#   SMOE_PAIRED_SET_B=runtime.device=privateuseone /usr/bin/python3 bench/paired_runs.py \
#     build/bin/smoe bench/with_fake_accelerator.sh CONFIG PAIRS --set data.path=...
# SMOE_BUILD_DIR: the build (default build/ beside bench/).
build="${SMOE_BUILD_DIR:-$(cd "$(dirname "$0")/.." && pwd)/build}"
LD_PRELOAD="$build/lib/libsmoe_fake_accelerator.so${LD_PRELOAD:+:$LD_PRELOAD}" exec "$build/bin/smoe" "$@"
