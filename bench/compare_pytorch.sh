#!/usr/bin/env bash
# smoe's expert stage against the same stage written in PyTorch-Python
# (bench/pytorch_experts.py: same libtorch via Debian's python3-torch, same
# model, batch, hyperparameters, g0 and data), on the quick config. Both sides
# run one thread bound to the same single core (smoe: one rank, `-c 1`, so its
# loader thread shares that core; Python: `taskset -c 0`). Three Python
# versions: a first draft (h5py per sample through a DataLoader, the frozen
# trunk on every batch), the same over preloaded tensors, and the careful one
# (tensors preloaded, trunk features computed once, batches by indexing) —
# only the last is algorithmically smoe's. Prints wall times, ratios and the
# test accuracy of the experts bagged with the base model on both sides.
#   bench/compare_pytorch.sh [DATASET_DIR] [REPEATS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/data/fashion-mnist}"
repeats="${2:-3}"
run="$(mktemp -d /tmp/smoe-vs-pytorch-XXXXXX)"
trap 'rm -rf "$run"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
py() { taskset -c 0 /usr/bin/python3 "$root/bench/pytorch_experts.py" "$run/smoe" --threads 1 "$@" 2>/dev/null; }
for i in $(seq "$repeats"); do
  # smoe: the whole quick run, its expert stage timed by the run itself.
  "$root/launch/smoe-run" -n 1 -c 1 train --config "$root/configs/fmnist-quick.yaml" --run-dir "$run/smoe" --force \
    --set "data.path=$data" --set runtime.threads=1 -q 2>/dev/null
  /usr/bin/python3 -c 'import json,sys; print("smoe", json.load(open(sys.argv[1]))["stages"]["experts"])' \
    "$run/smoe/report.json" >>"$run/times"
  for mode in careful preload draft; do
    flag=""; [ "$mode" != draft ] && flag="--$mode"
    # The first draft is slow and its ratio stable: once.
    [ "$mode" = draft ] && [ "$i" -gt 1 ] && continue
    py $flag | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], r["expert_stage_seconds"], r["bagged_expert_accuracy"], r["smoe_bagged_expert_accuracy"])' "$mode" >>"$run/times"
  done
done
/usr/bin/python3 - "$run/times" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
t = {}
acc = {}
for r in rows:
    t.setdefault(r[0], []).append(float(r[1]))
    if len(r) > 2:
        acc[r[0]] = float(r[2])
        acc["smoe"] = float(r[3])
smoe = statistics.median(t["smoe"])
print("expert stage, quick config (3,000 images, 4 experts + stacking), 1 thread on 1 core each side")
print("median of %d paired runs (the first draft: 1 run)" % len(t["smoe"]))
print("  %-52s %7.2f s            accuracy %.4f" % ("smoe", smoe, acc["smoe"]))
names = {"careful": "PyTorch, careful (trunk cached, tensors, indexing)",
         "preload": "PyTorch, DataLoader over preloaded tensors",
         "draft": "PyTorch, DataLoader over h5py, per sample"}
for k in ("careful", "preload", "draft"):
    m = statistics.median(t[k])
    print("  %-52s %7.2f s  ratio %5.2f  accuracy %.4f" % (names[k], m, m / smoe, acc[k]))
PY
