#!/usr/bin/env bash
# libFuzzer (clang) on the readers of untrusted input: the YAML config with
# --set overrides, the dataset manifest, and the idx, .npy and CIFAR
# converters. Each target runs for SECONDS (default 60) from the seed corpus
# in tests/fuzz/corpus; a crash, a sanitizer report or an error message of
# more than one line fails. Builds in build-fuzz/.
#   launch/fuzz.sh [SECONDS]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
seconds="${1:-60}"
"$here/install-deps.sh"
dir="$root/build-fuzz"
targets=(fuzz_config fuzz_manifest fuzz_idx fuzz_npy fuzz_cifar)
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSMOE_FUZZ=ON \
    -DSMOE_BUILD_TESTS=OFF -DSMOE_BUILD_BENCH=OFF -DSMOE_WITH_NCCL=OFF >/dev/null
fi
cmake --build "$dir" -j "${SMOE_BUILD_JOBS:-$(nproc)}" --target "${targets[@]}"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for t in "${targets[@]}"; do
  work="$dir/corpus/$t"  # grows across runs; the seeds stay in the repository
  mkdir -p "$work"
  log="$dir/$t.log"
  if ! "$dir/bin/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$dir/$t-" \
      "$work" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t FAILED (crash input saved as $dir/$t-*)"
    exit 1
  fi
  echo "fuzz: $t $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1)"
done
echo "fuzz: clean"
