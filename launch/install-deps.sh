#!/usr/bin/env bash
# Installs every Debian package smoe needs to build, test and run. Idempotent:
# packages already present are skipped, and apt is not touched at all when
# nothing is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache lld pkg-config git
  libtorch-dev libopenblas0-openmp
  openmpi-bin libopenmpi-dev
  libhdf5-dev hdf5-tools
  libboost-program-options-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev clang-14 libclang-rt-14-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev
  libssl-dev zlib1g-dev libstb-dev libxtensor-dev
  libplplot-dev plplot-driver-cairo
  dataset-fashion-mnist
  python3-torch python3-h5py python3-sklearn python3-numpy python3-yaml
)

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
