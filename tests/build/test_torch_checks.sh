#!/usr/bin/env bash
# CMake refuses, in one line naming the libtorch, the two libtorch builds
# smoe cannot use: one older than 1.13, and one built with the pre-C++11 ABI
# (the older pip wheels, which would fail at link time with undefined
# std::__cxx11 symbols). Each case configures smoe against a fake libtorch
# (a TorchConfig.cmake, its version file and torch/version.h, nothing else)
# and checks the exit status and the message; a third, well-formed fake
# (2.14, C++11 ABI) must get past the checks to prove that the first two
# fail for the reason they name.
set -euo pipefail
SRC="${SMOE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
T="$(mktemp -d /tmp/smoe-torch-checks-XXXXXX)"
trap 'rm -rf "$T"' EXIT

fake_torch() {  # fake_torch DIR MAJOR MINOR ABI
  local d=$1
  mkdir -p "$d/include/torch/csrc/api/include/torch"
  cat >"$d/include/torch/csrc/api/include/torch/version.h" <<H
#define TORCH_VERSION_MAJOR $2
#define TORCH_VERSION_MINOR $3
#define TORCH_VERSION_PATCH 0
H
  cat >"$d/TorchConfigVersion.cmake" <<V
set(PACKAGE_VERSION "$2.$3.0")
set(PACKAGE_VERSION_COMPATIBLE TRUE)
V
  cat >"$d/TorchConfig.cmake" <<C
set(TORCH_INCLUDE_DIRS "$d/include")
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=$4")
add_library(torch INTERFACE IMPORTED)
set(TORCH_LIBRARIES torch)
set(Torch_FOUND TRUE)
C
}

configure() {  # configure NAME: configures against fake libtorch NAME, output in $T/NAME.log
  cmake -S "$SRC" -B "$T/build-$1" -G Ninja -DTorch_DIR="$T/$1" -DSMOE_WITH_NCCL=OFF >"$T/$1.log" 2>&1
}

fail=0
expect_refused() {  # expect_refused NAME PATTERN
  if configure "$1"; then
    echo "FAIL: cmake accepted the $1 libtorch"; fail=1; return
  fi
  local line
  # CMake wraps a long message over several lines: read the log as one line.
  line="$(tr -s ' \n' '  ' <"$T/$1.log" | grep -o "smoe: libtorch .*" | sed 's/ Call Stack.*//' | head -1 || true)"
  if [[ "$line" =~ $2 ]]; then
    echo "ok: $1 refused: $line"
  else
    echo "FAIL: $1: expected a line matching '$2', got:"; tail -20 "$T/$1.log"; fail=1
  fi
}

fake_torch "$T/old" 1 12 1
fake_torch "$T/preabi" 2 6 0
fake_torch "$T/good" 2 14 1
expect_refused old "smoe: libtorch 1\.12\.0 at .*/old is too old: smoe needs libtorch 1\.13 or newer"
expect_refused preabi "smoe: libtorch 2\.6\.0 at .*/preabi is built with the pre-C\+\+11 ABI \(_GLIBCXX_USE_CXX11_ABI=0\)"
# The good fake passes the checks (configure may still stop later: it has no libraries).
configure good || true
if grep -q "smoe: libtorch 2.14.0 (.*/good), CUDA OFF, C++11 ABI 1" "$T/good.log"; then
  echo "ok: a 2.14 C++11-ABI libtorch passes the checks"
else
  echo "FAIL: the well-formed fake libtorch was refused or not reported:"; grep "smoe:" "$T/good.log" || tail -20 "$T/good.log"; fail=1
fi
exit $fail
