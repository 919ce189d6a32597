#!/usr/bin/env bash
# Prepares what launch/gpu-check.sh needs on a bare GPU machine, on a Debian
# 12 machine with network access to its mirror: the .deb files of
# launch/gpu-check-packages.txt (apt-get download, into .gpu-check/debs/) and
# the first 12,000 training and 2,000 test images of Fashion-MNIST in its own
# format (.gpu-check/fashion-mnist/: the quick config uses 3,000 and 1,000;
# the whole set would not fit). .gpu-check/ is ignored by git; the device
# tool carries .gpu-check/debs and .gpu-check/fashion-mnist. Prints what they
# hold: the device tool carries at most 64 MiB, sources included.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="$root/.gpu-check"
mkdir -p "$out/debs" "$out/fashion-mnist"

mapfile -t pkgs < <(grep -v '^\s*\(#\|$\)' "$here/gpu-check-packages.txt")
(cd "$out/debs" && apt-get download -q "${pkgs[@]}" 2>&1 | grep -v '^Get:' | grep -v 'unsandboxed' || true)
missing=()
for p in "${pkgs[@]}"; do compgen -G "$out/debs/${p}_*.deb" >/dev/null || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu-check-fetch: not downloaded: ${missing[*]}" >&2
  exit 1
fi

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
  echo "gpu-check-fetch: $fmnist is missing (apt-get install dataset-fashion-mnist)" >&2
  exit 1
fi
# IDX files cut to their first N items (the header's count rewritten).
/usr/bin/python3 - "$fmnist" "$out/fashion-mnist" <<'EOF'
import gzip, struct, sys
src, dst = sys.argv[1:3]
for split, n in (("train", 12000), ("t10k", 2000)):
    for kind, item in (("images-idx3-ubyte", 28 * 28), ("labels-idx1-ubyte", 1)):
        name = "%s-%s.gz" % (split, kind)
        data = gzip.open("%s/%s" % (src, name)).read()
        dims = data[3]
        header = 4 + 4 * dims
        out = data[:4] + struct.pack(">I", n) + data[8:header] + data[header:header + n * item]
        with gzip.open("%s/%s" % (dst, name), "wb", compresslevel=9) as f:
            f.write(out)
EOF

total=$(du -sb "$out/debs" "$out/fashion-mnist" | awk '{s += $1} END {print s}')
echo "gpu-check-fetch: ${#pkgs[@]} packages and a Fashion-MNIST subset in $out: $((total / 1048576)) MiB"
if [ "$total" -gt $((60 * 1048576)) ]; then
  echo "gpu-check-fetch: over 60 MiB: with the sources it would not fit the device tool's 64 MiB" >&2
  exit 1
fi
