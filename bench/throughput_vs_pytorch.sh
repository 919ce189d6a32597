#!/usr/bin/env bash
# smoe's training steps against the same steps in PyTorch, paired on one
# device: bench_throughput's base and expert steps (--device, --precision,
# --channels-last) and bench/throughput_pytorch.py on the batch bench_throughput
# wrote, run in turn PAIRS times for each of float32, bfloat16, float16 (with
# loss scaling) and float16 + channels-last. Prints a Markdown table: the
# median images/s of each side and the median of the pairs' ratios
# (smoe / PyTorch), with the precision each side actually ran.
#
#   bench/throughput_vs_pytorch.sh BENCH_THROUGHPUT DATASET_DIR [DEVICE] [PAIRS]
#
# Environment: PYTHON (default /usr/bin/python3; a CUDA torch on a GPU
# machine), MPIRUN (default mpirun), THREADS (intra-op threads, both sides;
# default 1), STEPS (default 40). launch/gpu-check.sh runs it on the GPU.
set -euo pipefail
bench="${1:?usage: throughput_vs_pytorch.sh BENCH_THROUGHPUT DATASET_DIR [DEVICE] [PAIRS]}"
data="${2:?usage: throughput_vs_pytorch.sh BENCH_THROUGHPUT DATASET_DIR [DEVICE] [PAIRS]}"
device="${3:-cpu}"
pairs="${4:-3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-/usr/bin/python3}"
mpirun="${MPIRUN:-mpirun}"
threads="${THREADS:-1}"
steps="${STEPS:-40}"
work="$(mktemp -d /tmp/smoe-throughput-XXXXXX)"
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for setting in "float32:0" "bfloat16:0" "float16:0" "float16:1"; do
  IFS=: read -r precision cl <<< "$setting"
  for i in $(seq "$pairs"); do
    json="$work/$precision-$cl-$i.json"
    "$mpirun" -np 1 "$bench" "$data" --device "$device" --precision "$precision" --channels-last "$cl" \
      --threads "$threads" --steps "$steps" --json "$json" > "$work/smoe.log" 2>&1 ||
      { tail -5 "$work/smoe.log" >&2; echo "throughput_vs_pytorch: bench_throughput failed ($precision)" >&2; exit 1; }
    "$py" "$here/throughput_pytorch.py" "$json" --threads "$threads" > "$json.pytorch" 2> "$work/pytorch.log" ||
      { tail -5 "$work/pytorch.log" >&2; echo "throughput_vs_pytorch: the PyTorch side failed ($precision)" >&2; exit 1; }
  done
done
"$py" - "$work" "$pairs" <<'EOF'
import glob, json, os, statistics, sys
work, pairs = sys.argv[1], int(sys.argv[2])
print("| requested | smoe ran | piece | smoe images/s | PyTorch images/s | smoe / PyTorch (median of %d pairs) |" % pairs)
print("|---|---|---|---|---|---|")
for precision, cl in (("float32", 0), ("bfloat16", 0), ("float16", 0), ("float16", 1)):
    runs = []
    for i in range(1, pairs + 1):
        f = os.path.join(work, "%s-%d-%d.json" % (precision, cl, i))
        runs.append((json.load(open(f)), json.load(open(f + ".pytorch"))))
    s0 = runs[0][0]
    ran = s0["precision"] + (" + loss scaling" if s0["loss_scaling"] else "") + (", channels-last" if s0["channels_last"] else "")
    name = precision + (", channels-last" if cl else "")
    for piece, key in (("base step", "base_step_images_per_s"), ("expert step", "expert_step_images_per_s")):
        a = statistics.median(r[0][key] for r in runs)
        b = statistics.median(r[1][key] for r in runs)
        ratio = statistics.median(r[0][key] / r[1][key] for r in runs)
        print("| %s | %s | %s | %.0f | %.0f | %.2f |" % (name, ran, piece, a, b, ratio))
s, p = runs[0]
print()
print("tiny-ResNet-10 width %d, batch %d (micro %d), %d steps, on %s; PyTorch %s" % (
    s["width"], s["batch"], s["micro"], s["steps"], s["device"], p["torch"]))
EOF
