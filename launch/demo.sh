#!/usr/bin/env bash
# The first thing to run: installs the dependencies, builds smoe, converts
# Fashion-MNIST (Debian's dataset-fashion-mnist) into HDF5 shards, trains the
# quick config on 2 ranks and says where the report and plots are.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

"$here/build.sh"

data="$root/data/fashion-mnist"
if [ ! -f "$data/manifest.json" ] || ! build/bin/smoe-data verify "$data" >/dev/null 2>&1; then
  build/bin/smoe-data convert fashion-mnist /usr/share/datasets/fashion-mnist "$data" --force
fi
build/bin/smoe-data inspect "$data" | head -6

run="${SMOE_DEMO_RUN:-$root/runs/demo-quick}"
"$here/smoe-run" -n 2 train --config configs/fmnist-quick.yaml --run-dir "$run" --force --set "data.path=$data"

echo
echo "demo: done. The run folder is $run:"
echo "  report          $run/report.json"
echo "  anytime curve   $run/anytime.csv"
echo "  plots           $run/accuracy_vs_macs.png  $run/routing.png"
echo "  checkpoints     $run/base.pt  $run/experts/"
/usr/bin/python3 - "$run/report.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
print("  base model      %.2f%% at %.2f MMACs" % (100 * r["base"]["accuracy"], r["base"]["macs"] / 1e6))
for k, v in r["moe"].items():
    print("  MoE %-12s %.2f%% at %.2f MMACs" % (k, 100 * v["accuracy"], v["macs"] / 1e6))
PY
