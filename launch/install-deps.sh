#!/usr/bin/env bash
# Installs every Debian package smoe needs to build, test and run. Idempotent:
# packages already present are skipped, and apt is not touched at all when
# nothing is missing.
set -euo pipefail

# The release decides a few names: Debian 12 (bookworm: libtorch 1.13), 13
# (trixie: libtorch 2.6) and unstable (sid: libtorch 2.14). The sanitizer and
# fuzzer builds (launch/test-sanitizers.sh, launch/fuzz.sh) use clang 14, which
# only bookworm's list carries; elsewhere the distribution's default clang.
codename="$( (. /etc/os-release && echo "${VERSION_CODENAME:-unknown}") 2>/dev/null || echo unknown)"
case "$codename" in
  bookworm) CLANG=(clang-14 libclang-rt-14-dev clang-format-14) ;;  # clang-format 14: launch/check-format.sh
  trixie | forky | sid) CLANG=(clang libclang-rt-dev) ;;
  *) echo "install-deps: Debian release '$codename' not known (expected bookworm, trixie or sid); trying bookworm's list" >&2
     CLANG=(clang-14 libclang-rt-14-dev) ;;
esac

PACKAGES=(
  build-essential cmake ninja-build ccache lld pkg-config git
  ${SMOE_TORCH_PACKAGES:-libtorch-dev python3-torch} libopenblas0-openmp
  openmpi-bin libopenmpi-dev
  libhdf5-dev hdf5-tools
  libboost-program-options-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev "${CLANG[@]}"
  libspdlog-dev libfmt-dev nlohmann-json3-dev
  libssl-dev zlib1g-dev libstb-dev libxtensor-dev
  libplplot-dev plplot-driver-cairo
  dataset-fashion-mnist
  python3-h5py python3-sklearn python3-numpy python3-yaml
)
# SMOE_TORCH_PACKAGES replaces libtorch-dev and python3-torch (the CUDA
# builds: libtorch-cuda-dev python3-torch-cuda); SMOE_EXTRA_PACKAGES: more packages for this machine (launch/test-matrix.sh's
# CUDA entry adds libtorch-cuda-dev, nvidia-cuda-toolkit and libnccl-dev).
read -r -a extra <<< "${SMOE_EXTRA_PACKAGES:-}"
PACKAGES+=("${extra[@]}")

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
