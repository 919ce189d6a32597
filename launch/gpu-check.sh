#!/usr/bin/env bash
# The GPU check (docs/gpu-check.md): what to prove the first time a GPU
# machine is at hand, as one command that fits the device tool's 10 minutes.
#
# On a bare GPU machine — CUDA, nvcc, CMake, ninja and a Python with a CUDA
# torch 2.x, but no MPI, HDF5, yaml-cpp, Boost, spdlog, fmt, nlohmann-json,
# PLplot, xtensor or stb — after launch/gpu-check-fetch.sh filled
# .gpu-check/ on a Debian machine:
#   1. unpacks .gpu-check/debs/*.deb into a prefix (never into /);
#   2. stops here, saying so, where there is no GPU (the dry run on a CPU
#      machine);
#   3. builds smoe against that Python's libtorch, its CUDA and the NCCL of
#      its nvidia-nccl wheel;
#   4. runs test_comm_gpu; the quick config on one rank on the GPU (every
#      stage there) and on the CPU (the accuracies side by side); two ranks
#      on the one GPU (shared deliberately: collectives through MPI); and the
#      quick config's base and experts stages with bfloat16, float16 (loss
#      scaling) and channels-last; bench_throughput's base and expert steps
#      against the same steps in that Python's PyTorch, paired, in float32,
#      bfloat16, float16 and float16 + channels-last;
#   5. writes $OUT/summary.md, the block to paste into the README, with the
#      reports and logs beside it.
#
#   launch/gpu-check.sh               (OUT defaults to .gpu-check/out)
#   launch/gpu-check.sh --rehearse    without a GPU: steps 1 and 3, then the
#                                     quick config on 2 ranks on the CPU through
#                                     the prefix's mpirun — a rehearsal on a
#                                     machine without smoe's libraries (docs/gpu.md)
# Environment: PYTHON (default python3), OUT, SMOE_GPU_CHECK_JOBS (build jobs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
work="$root/.gpu-check"
out="${OUT:-$work/out}"
mkdir -p "$out"
start=$(date +%s)
say() { echo "gpu-check: $*" | tee -a "$out/gpu-check.log"; }
elapsed() { echo $(( $(date +%s) - start )); }

# 1. The prefix.
prefix="$work/prefix"
listed=$(cd "$work" && ls debs 2>/dev/null | sort || true)
if [ "$(cat "$prefix/.unpacked" 2>/dev/null)" != "$listed" ]; then  # not yet, or other packages
  shopt -s nullglob
  debs=("$work"/debs/*.deb)
  if [ ${#debs[@]} -eq 0 ]; then
    say "no .deb files in $work/debs: run launch/gpu-check-fetch.sh on a Debian 12 machine first"
    exit 1
  fi
  rm -rf "$prefix" && mkdir -p "$prefix"
  for d in "${debs[@]}"; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$d" "$prefix"
    else  # a .deb is an ar archive holding data.tar.*
      tmp=$(mktemp -d)
      (cd "$tmp" && ar x "$d" && tar -xf data.tar.* -C "$prefix")
      rm -rf "$tmp"
    fi
  done
  # Absolute links (Debian's /usr/lib/x86_64-linux-gnu/hdf5/serial/include ->
  # /usr/include/hdf5/serial, ...) point into the prefix instead.
  while IFS= read -r link; do
    target=$(readlink "$link")
    ln -sfn "$prefix$target" "$link"
  done < <(find "$prefix" -type l -lname '/*')
  # Debian names its MPI commands through alternatives (/etc/alternatives),
  # which unpacking does not create.
  for cmd in mpirun mpiexec mpicc mpicxx mpic++ orterun; do
    if [ ! -e "$prefix/usr/bin/$cmd" ] && [ -e "$prefix/usr/bin/$cmd.openmpi" ]; then ln -s "$cmd.openmpi" "$prefix/usr/bin/$cmd"; fi
  done
  echo "$listed" > "$prefix/.unpacked"
  say "${#debs[@]} packages unpacked into $prefix ($(du -sh "$prefix" | cut -f1)) in $(elapsed) s"
fi
lib="$prefix/usr/lib/x86_64-linux-gnu"
export OPAL_PREFIX="$prefix/usr"                 # Open MPI, relocated
export PMIX_INSTALL_PREFIX="$lib/pmix2"
export PATH="$prefix/usr/bin:$PATH"
export LD_LIBRARY_PATH="$lib:$lib/openmpi/lib:$lib/hdf5/serial${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$lib/pkgconfig:$prefix/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$prefix"
export CPATH="$prefix/usr/include/x86_64-linux-gnu${CPATH:+:$CPATH}"  # Debian's multiarch headers (opensslconf.h)
# PLplot's data, its cairo driver, fontconfig's configuration.
for d in "$prefix"/usr/share/plplot*; do export PLPLOT_LIB="$d"; done
for d in "$lib"/plplot*/drivers; do export PLPLOT_DRV_DIR="$d"; done
export FONTCONFIG_FILE="$prefix/etc/fonts/fonts.conf"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_plm_rsh_agent=false  # one node: no ssh (a machine without it refuses to start otherwise)
mpirun --version | head -1 | sed 's/^/gpu-check: /'

# 2. A GPU?
build_only=false
[ "${1:-}" = --rehearse ] && build_only=true
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
if [ "$gpus" = 0 ] && ! $build_only; then
  say "no GPU here (nvidia-smi lists none): the prefix is ready; nothing more to check on this machine"
  exit 0
fi
card=$( (nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU") | head -1)
say "$gpus GPU(s): $card"

# 3. Build against the Python's libtorch.
py="${PYTHON:-python3}"
torch_cmake=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
torch_version=$("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null || echo "(no Python torch)")
nccl_home=$("$py" -c 'import nvidia.nccl as n, os; print(list(n.__path__)[0])' 2>/dev/null || true)
cuda_root=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
say "torch $torch_version, CUDA toolkit $cuda_root, NCCL ${nccl_home:-(none found)}"
build="$work/build"
with_nccl=AUTO
if [ -n "$nccl_home" ]; then
  export NCCL_HOME="$nccl_home"
  with_nccl=ON
fi
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_cmake;$prefix/usr;$lib/cmake" \
  -DMPI_C_COMPILER="$prefix/usr/bin/mpicc" -DHDF5_ROOT="$lib/hdf5/serial" \
  -DSMOE_WITH_NCCL="$with_nccl" -DSMOE_CUDA_ROOT="$cuda_root" \
  -DSMOE_BUILD_BENCH=ON > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; say "cmake failed"; exit 1; }
grep 'smoe: libtorch' "$out/cmake.log" | sed 's/^-- /gpu-check: /'
cmake --build "$build" -j "${SMOE_GPU_CHECK_JOBS:-$(nproc)}" --target smoe smoe-data test_comm_gpu bench_throughput > "$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log"; say "build failed"; exit 1; }
say "built in $(elapsed) s: $("$build/bin/smoe" --version | head -1)"
"$build/bin/smoe" --version > "$out/version.txt"
data="$work/fmnist"
[ -f "$data/manifest.json" ] || "$build/bin/smoe-data" convert fashion-mnist "$work/fashion-mnist" "$data" > /dev/null
runs="$work/runs"
rm -rf "$runs" && mkdir -p "$runs"
train() {  # name ranks args...
  local name=$1 np=$2
  shift 2
  local t0
  t0=$(date +%s)
  if mpirun -np "$np" "$build/bin/smoe" train --config "$root/configs/fmnist-quick.yaml" --run-dir "$runs/$name" \
       --set data.path="$data" -q "$@" > "$out/$name.log" 2>&1; then
    cp "$runs/$name/report.json" "$out/$name.report.json"
    say "$name: done in $(( $(date +%s) - t0 )) s"
  else
    say "$name: FAILED (exit $?, $out/$name.log)"
    tail -5 "$out/$name.log"
  fi
}
# smoe's training steps against the same steps in this machine's PyTorch,
# paired (bench/throughput_vs_pytorch.sh); without a torch in Python, said.
throughput() {  # device pairs steps
  if ! "$py" -c 'import torch' 2>/dev/null; then
    say "throughput: $py has no torch: the comparison with PyTorch left out"
    return 0
  fi
  if PYTHON="$py" STEPS="$3" "$root/bench/throughput_vs_pytorch.sh" "$build/bin/bench_throughput" "$data" "$1" "$2" \
       > "$out/throughput.md" 2> "$out/throughput.log"; then
    say "throughput: done ($out/throughput.md)"
  else
    say "throughput: FAILED ($out/throughput.log)"
    tail -5 "$out/throughput.log"
  fi
}
if $build_only; then
  throughput cpu 1 5
  train rehearsal-cpu-2-ranks 2 --set runtime.device=cpu --set runtime.threads=1
  [ -f "$out/rehearsal-cpu-2-ranks.report.json" ] || exit 1
  [ -f "$runs/rehearsal-cpu-2-ranks/accuracy_vs_macs.png" ] || { say "no plot written"; exit 1; }
  say "--rehearse: built, and the quick config ran on 2 ranks with the prefix's MPI, HDF5 and PLplot; the checks need a GPU"
  exit 0
fi

# 4. The checks.
"$build/bin/test_comm_gpu" --gtest_brief=1 > "$out/test_comm_gpu.log" 2>&1 && comm_gpu=passed || comm_gpu=FAILED
say "test_comm_gpu: $comm_gpu"
train cuda 1 --set runtime.device=cuda
train cpu 1 --set runtime.device=cpu --set runtime.threads=8
train cuda-2-ranks-one-gpu 2 --set runtime.device=cuda
for v in "bf16:bfloat16:false" "fp16:float16:false" "fp16-cl:float16:true"; do
  IFS=: read -r name precision cl <<< "$v"
  train "cuda-$name" 1 --set runtime.device=cuda --until experts --set base.precision="$precision" \
    --set experts.precision="$precision" --set base.channels_last="$cl" --set experts.channels_last="$cl"
done

throughput cuda 3 200

# 5. The summary.
"$py" - "$out" "$runs" "$card" "$torch_version" "$comm_gpu" "$(elapsed)" <<'EOF' > "$out/summary.md"
import json, os, sys
out, runs, card, torch_version, comm_gpu, seconds = sys.argv[1:7]
def report(name):
    p = os.path.join(out, name + ".report.json")
    return json.load(open(p)) if os.path.exists(p) else None
print("GPU check (launch/gpu-check.sh): %s; torch %s; test_comm_gpu %s; %s s in all" % (card, torch_version, comm_gpu, seconds))
print()
print("| run | devices | base acc. | MoE bagging | stages (s) |")
print("|---|---|---|---|---|")
for name in ("cuda", "cpu", "cuda-2-ranks-one-gpu"):
    r = report(name)
    if r is None:
        print("| %s | failed | | | |" % name)
        continue
    stages = ", ".join("%s %.1f" % (k, v) for k, v in r.get("stages", {}).items())
    print("| %s | %s | %.2f %% | %.2f %% | %s |" % (name, " ".join(r["runtime"]["devices"]), 100 * r["base"]["accuracy"],
          100 * r["moe"]["bagging"]["accuracy"], stages))
print()
print("Base and experts stages (--until experts) by precision, seconds per stage (from run.json):")
for name in ("cuda-bf16", "cuda-fp16", "cuda-fp16-cl"):
    p = os.path.join(runs, name, "run.json")
    if not os.path.exists(p):
        print("- %s: failed" % name)
        continue
    done = json.load(open(p))["done"]
    print("- %s: base %.1f s (%s), experts %.1f s" % (name, done["base"].get("seconds", 0), done["base"].get("precision"),
          done.get("experts", {}).get("seconds", 0)))
throughput = os.path.join(out, "throughput.md")
if os.path.exists(throughput):
    print()
    print("Training steps against the same steps in this machine's PyTorch (bench/throughput_vs_pytorch.sh, 3 pairs):")
    print()
    print(open(throughput).read().rstrip())
EOF
cat "$out/summary.md"
say "done in $(elapsed) s; $out/summary.md"
