#!/usr/bin/env bash
# smoe's expert stage against the same stage written in PyTorch-Python
# (bench/pytorch_experts.py: same libtorch via Debian's python3-torch, same
# model, batch, hyperparameters and thread count, data from the same HDF5
# shards through h5py and a DataLoader), on the quick config, one rank, one
# thread. Prints both wall times and the ratios.
#   bench/compare_pytorch.sh [DATASET_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/data/fashion-mnist}"
run="$(mktemp -d /tmp/smoe-vs-pytorch-XXXXXX)"
trap 'rm -rf "$run"' EXIT
"$root/launch/smoe-run" -n 1 train --config "$root/configs/fmnist-quick.yaml" --run-dir "$run/smoe" --force \
  --set "data.path=$data" --set runtime.threads=1 -q 2>/dev/null
smoe_s=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stages"]["experts"])' "$run/smoe/report.json")
py_s=$(/usr/bin/python3 "$root/bench/pytorch_experts.py" "$run/smoe" --threads 1 2>/dev/null | \
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["expert_stage_seconds"])')
pre_s=$(/usr/bin/python3 "$root/bench/pytorch_experts.py" "$run/smoe" --threads 1 --preload 2>/dev/null | \
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["expert_stage_seconds"])')
/usr/bin/python3 - "$smoe_s" "$py_s" "$pre_s" <<'PY'
import sys
smoe, py, pre = map(float, sys.argv[1:])
print("expert stage, quick config, 1 rank x 1 thread")
print("  smoe                                         %7.1f s" % smoe)
print("  PyTorch, DataLoader over h5py, per sample    %7.1f s   ratio %.2f" % (py, py / smoe))
print("  PyTorch, DataLoader over preloaded tensors   %7.1f s   ratio %.2f" % (pre, pre / smoe))
PY
