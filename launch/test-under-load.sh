#!/usr/bin/env bash
# The test suite on a loaded machine: starts BUSY busy-looping processes
# (default: one per core) pinned round-robin to the cores the suite runs on,
# runs ./launch/test.sh with the remaining arguments (passed to ctest), and
# stops the busy processes however the suite ends. It proves what
# docs/hardening.md promises: no test's outcome depends on how fast the
# machine is. SMOE_LOAD_CORES=0 pins the suite itself to core 0 as well
# (a machine several times slower).
#   ./launch/test-under-load.sh            # 2 busy processes on a 2-core machine
#   BUSY=4 SMOE_LOAD_CORES=0 ./launch/test-under-load.sh -R e2e_pipeline
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cores="${SMOE_LOAD_CORES:-$(taskset -pc $$ | sed 's/.*: //')}"
mapfile -t list < <(/usr/bin/python3 -c '
import sys
out = []
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    out += range(int(a), int(b or a) + 1)
print("\n".join(map(str, out)))' "$cores")
busy="${BUSY:-${#list[@]}}"
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop EXIT
for ((i = 0; i < busy; i++)); do
  core="${list[$((i % ${#list[@]}))]}"
  taskset -c "$core" sh -c 'while :; do :; done' &
  pids+=($!)
done
echo "test-under-load: $busy busy process(es) on cores $cores; the suite on cores $cores"
taskset -c "$cores" "$here/test.sh" "$@"
