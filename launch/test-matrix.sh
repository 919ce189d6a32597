#!/usr/bin/env bash
# One entry of the build matrix: a clean build of this work tree against one
# libtorch, then the whole test suite (launch/test.sh) with that build.
#
#   launch/test-matrix.sh ENTRY [ctest arguments]
#
#   bookworm     this machine (Debian 12): libtorch 1.13.1, CPU
#   sid          Debian unstable in a chroot: libtorch 2.14, CPU
#   trixie-cuda  Debian 13 in a chroot: libtorch 2.6 with CUDA 12.4, NCCL 2.22,
#                smoe built with CUDA and the NCCL plugin; no GPU here, so
#                the GPU tests skip and every CPU test runs with this build
#   cross-version  runs move between releases: tests/compat/cross_version.sh
#                with this machine's build (1.13) and sid's (2.14), each
#                resuming and evaluating the other's run (builds both first)
#   sid-exec CMD...  runs CMD here with the sid chroot ready for
#                `chroot /var/cache/smoe-ci/sid ...` (its mounts, the work
#                tree at its own path inside), after the sid entry built it:
#                how docs/build.md times 1.13 against 2.14
#
# A chroot is made with debootstrap from the machine's Debian mirror and kept
# under $SMOE_CI_CACHE (default /var/cache/smoe-ci/ENTRY), outside the clone;
# it is made again when absent. The work tree is bind-mounted read-write at
# /smoe inside it; the build goes to the chroot's /build (never build/).
# Needs root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
entry="${1:-}"
shift || true

case "$entry" in
  bookworm)
    SMOE_BUILD_DIR="${SMOE_BUILD_DIR:-$root/build}" exec "$here/test.sh" "$@" ;;
  sid | cross-version | sid-exec) suite=sid components=main torch_pkgs="libtorch-dev python3-torch" extra="" cmake_args="" ;;
  trixie-cuda)
    suite=trixie components=main,contrib,non-free
    torch_pkgs="libtorch-cuda-dev python3-torch-cuda"
    extra="nvidia-cuda-toolkit libnccl-dev binutils"
    cmake_args="-DSMOE_WITH_NCCL=ON -DSMOE_CUDA_ROOT=/usr" ;;
  *) echo "test-matrix: unknown entry '$entry' (expected bookworm, sid, trixie-cuda, cross-version or sid-exec)" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then echo "test-matrix: $entry needs root (debootstrap, chroot, mounts)" >&2; exit 1; fi
cache="${SMOE_CI_CACHE:-/var/cache/smoe-ci}"
chroot_name="$entry"
case "$entry" in cross-version | sid-exec) chroot_name=sid ;; esac
dir="$cache/$chroot_name"
mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

# One run per chroot at a time; mounts a killed run left behind are removed.
mkdir -p "$cache"
exec 9>"$cache/$chroot_name.lock"
flock -n 9 || { echo "test-matrix: another run is using $dir" >&2; exit 1; }
{ findmnt -rn -o TARGET | grep "^$dir/" || true; } | sort -r | while read -r m; do umount -l "$m"; done

mounted=()
unmount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  mounted=()
}
trap unmount_all EXIT
mount_in() {  # mount_in TARGET mount-arguments...
  local target=$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}

start=$(date +%s)
if [ ! -f "$dir/.smoe-chroot-ready" ]; then
  # Never remove a folder that still has something mounted inside it.
  if findmnt -rn -o TARGET | grep -q "^$dir/"; then
    echo "test-matrix: $dir has mounts inside it; unmount them first" >&2
    exit 1
  fi
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
  rm -rf "$dir"
  mkdir -p "$cache"
  echo "test-matrix: debootstrap $suite ($components) into $dir"
  debootstrap --variant=minbase --components="$components" "$suite" "$dir" "$mirror" >"$cache/$entry-debootstrap.log"
  # A mirror snapshot's Release files may be past their Valid-Until date.
  echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99smoe-snapshot"
  touch "$dir/.smoe-chroot-ready"
fi
cp /etc/resolv.conf "$dir/etc/resolv.conf"
cp /etc/hosts "$dir/etc/hosts"   # this host's name resolves inside too (Slurm's controller address)

mount_in "$dir/proc" -t proc proc
mount_in "$dir/sys" -t sysfs sys
mount_in "$dir/dev" --bind /dev
mount_in "$dir/dev/pts" --bind /dev/pts
mount_in "$dir/dev/shm" -t tmpfs tmpfs   # OpenMPI's shared-memory transport
mount_in "$dir/smoe" --bind "$root"

in_chroot() { chroot "$dir" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive SMOE_TORCH_PACKAGES="$torch_pkgs" SMOE_EXTRA_PACKAGES="$extra" "$@"; }

if [ "$entry" = trixie-cuda ]; then "$root/.ci/cuda-chroot-setup.sh" "$dir" before; fi
in_chroot /smoe/launch/install-deps.sh
if [ "$entry" = trixie-cuda ]; then "$root/.ci/cuda-chroot-setup.sh" "$dir" after; fi
echo "test-matrix: $chroot_name chroot ready in $(( $(date +%s) - start )) s"

# git refuses a repository owned by another user; the bind mount keeps the owner.
in_chroot git config --global --add safe.directory /smoe
if [ "$entry" = sid-exec ]; then
  mount_in "$dir$root" --bind "$root"
  "$@"
  exit
fi

# A clean build of the work tree each time (ccache, cached in the chroot, keeps a repeat fast);
# SMOE_MATRIX_KEEP_BUILD=1 builds incrementally instead, and cross-version
# reuses the sid entry's build of the same tree.
if [ -z "${SMOE_MATRIX_KEEP_BUILD:-}" ] && [ "$entry" != cross-version ]; then rm -rf "$dir/build"; fi
# shellcheck disable=SC2086
in_chroot SMOE_BUILD_DIR=/build /bin/bash -c "cd /smoe && ./launch/build.sh $cmake_args"
if [ "$entry" = cross-version ]; then
  "$here/build.sh"
  # The work tree at its own path inside the chroot too, so that both builds
  # see the run folders at the same paths.
  mount_in "$dir$root" --bind "$root"
  "$root/tests/compat/cross_version.sh" "$root/build/cross-version" "$root/build/bin/smoe" \
    "chroot $dir /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 /build/bin/smoe"
else
  in_chroot SMOE_BUILD_DIR=/build SMOE_MATRIX_ENTRY="$entry" /smoe/launch/test.sh "$@"
fi
echo "test-matrix: $entry passed in $(( $(date +%s) - start )) s"
