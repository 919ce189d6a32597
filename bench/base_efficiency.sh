#!/usr/bin/env bash
# The base stage's parallel efficiency T1 / (2 T2) on this machine, as issue
# 14 measures it: `smoe train --until base` with configs/fmnist.yaml's base
# settings (tiny-ResNet-10 width 16, batch 128, micro-batch 64, warm-up,
# weight decay) on 12,000 images for 2 epochs, one rank confined to one core
# (taskset -c 0, one thread) against two ranks each bound to its own core
# (launch/smoe-run -n 2, one thread each), without and with augmentation.
# T is the base stage's time in run.json; REPEATS paired runs (the machine is
# noisy), their median ratio. Then bench_throughput's pieces of the step on
# two ranks.
#   bench/base_efficiency.sh [DATASET_DIR] [IMAGES] [EPOCHS] [REPEATS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/data/fashion-mnist}"
images="${2:-12000}"
epochs="${3:-2}"
repeats="${4:-3}"
tmp="$(mktemp -d /tmp/smoe-efficiency-XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
sets=(--config "$root/configs/fmnist.yaml" --until base --set "data.path=$data" --set "data.limit_train=$images"
      --set "base.epochs=$epochs" --set runtime.threads=1 -q)
seconds() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["done"]["base"]["seconds"])' "$1/run.json"; }
for augment in false true; do
  for i in $(seq "$repeats"); do
    taskset -c 0 "$root/build/bin/smoe" train --run-dir "$tmp/one-$augment-$i" "${sets[@]}" --set "base.augment=$augment"
    "$root/launch/smoe-run" -n 2 train --run-dir "$tmp/two-$augment-$i" "${sets[@]}" --set "base.augment=$augment" \
      2>/dev/null
    echo "$(seconds "$tmp/one-$augment-$i") $(seconds "$tmp/two-$augment-$i")" >>"$tmp/times-$augment"
  done
  /usr/bin/python3 - "$augment" "$images" "$epochs" "$tmp/times-$augment" <<'PY'
import statistics, sys
augment, images, epochs, path = sys.argv[1:]
pairs = [tuple(map(float, l.split())) for l in open(path)]
ratios = [t1 / (2 * t2) for t1, t2 in pairs]
print("base stage, %s images x %s epochs, augmentation %s: T1/(2 T2) median %.3f over %d paired runs (%s)"
      % (images, epochs, "on" if augment == "true" else "off", statistics.median(ratios), len(pairs),
         ", ".join("T1 %.1f s / T2 %.1f s" % p for p in pairs)))
PY
done
mpirun -np 2 --map-by slot:PE=1 --bind-to core "$root/build/bin/bench_throughput" "$data" --steps 40 2>/dev/null
