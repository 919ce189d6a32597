#!/usr/bin/env bash
# Runs move between machines, and machines carry different libtorch releases:
# a run started by one smoe build is resumed and evaluated by another.
#
#   tests/compat/cross_version.sh WORK A_CMD B_CMD
#
# WORK: a folder both builds see at the same path; A_CMD, B_CMD: how to run
# each build's smoe (a command prefix, e.g. "build/bin/smoe" or
# "chroot /var/cache/smoe-ci/sid /build/bin/smoe"). launch/test-matrix.sh's
# cross-version entry runs it with libtorch 1.13 (this machine) as A and
# 2.14 (Debian unstable, in a chroot) as B. For each direction X -> Y:
#   * X trains the base stage and stops at its epoch-1 checkpoint (SIGTERM
#     placed at the named point base-epoch-1, exit 75). Y refuses to resume
#     it, in one line naming both libtorch releases: libtorch's optimiser
#     archives map states to parameters differently across releases (1.13's
#     SGD momenta loaded by 2.14 land on other parameters), so continuing
#     exactly is not possible; the run folder is left unchanged, and X
#     resumes and finishes it;
#   * X and Y evaluate the finished run (every weight checkpoint X wrote)
#     to the same accuracies.
# Exits non-zero at the first difference.
set -euo pipefail
work="$1" a_cmd="$2" b_cmd="$3"
src="${SMOE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

small=(--set data.path="$work/data" data.limit_train=600 data.limit_test=200 base.epochs=2 experts.epochs=1
       ensembler.epochs=1 runtime.threads=1)

# shellcheck disable=SC2086
version() { $1 --version; }
echo "cross-version: A = $(version "$a_cmd")"
echo "cross-version: B = $(version "$b_cmd")"

# accuracies RUN: the report's base and MoE accuracies, one per line.
accuracies() {
  /usr/bin/python3 - "$1/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("base %.6f" % r["base"]["accuracy"])
for k in sorted(r["moe"]):
    print("moe/%s %.6f" % (k, r["moe"][k]["accuracy"]))
PY
}

one_direction() {  # one_direction X_NAME X_CMD Y_NAME Y_CMD
  local xn=$1 x=$2 yn=$3 y=$4 run="$work/run-$1-then-$3" rc=0
  rm -rf "$run"
  # shellcheck disable=SC2086
  SMOE_FAULT=term:base-epoch-1 $x train --config "$src/configs/fmnist-quick.yaml" --run-dir "$run" "${small[@]}" \
    >"$run.$xn.log" 2>&1 || rc=$?
  if [ "$rc" != 75 ]; then
    echo "cross-version: $xn did not stop resumably at base-epoch-1 (exit $rc)"; cat "$run.$xn.log"; exit 1
  fi
  # Y cannot continue X's optimiser state (libtorch's archive maps states to
  # parameters differently across releases): one line naming both releases,
  # exit 1, and every file of the run left as it was (the log only grows),
  # so that X resumes it.
  local before after
  before="$(cd "$run" && find . -type f ! -name log.jsonl | sort | xargs sha256sum)"
  rc=0
  # shellcheck disable=SC2086
  $y train --config "$src/configs/fmnist-quick.yaml" --run-dir "$run" --resume "${small[@]}" >"$run.$yn.log" 2>&1 || rc=$?
  local line
  line="$(grep "^smoe: error:" "$run.$yn.log" || true)"
  if [ "$rc" != 1 ] || [ "$(grep -c "^smoe: error:" "$run.$yn.log")" != 1 ] ||
     ! [[ "$line" =~ "the optimiser state was written by libtorch "[0-9.]+" and this smoe runs libtorch "[0-9.]+ ]]; then
    echo "cross-version: $yn resuming $xn's run: expected one line naming both libtorch releases and exit 1, got exit $rc:"
    grep -v UCX "$run.$yn.log" | head -5; exit 1
  fi
  echo "cross-version: $yn refuses $xn's optimiser state: $line"
  after="$(cd "$run" && find . -type f ! -name log.jsonl | sort | xargs sha256sum)"
  [ "$before" = "$after" ] || { echo "cross-version: the refused resume changed the run folder"; exit 1; }
  # shellcheck disable=SC2086
  if ! $x train --config "$src/configs/fmnist-quick.yaml" --run-dir "$run" --resume "${small[@]}" >>"$run.$xn.log" 2>&1; then
    echo "cross-version: $xn could not resume its own run after $yn's refusal"; tail -5 "$run.$xn.log"; exit 1
  fi
  echo "cross-version: $xn resumed and finished it: ok"

  # The finished run, evaluated by X (who did not write most of it) and by Y.
  local copy="$work/eval-$1-run-by-$3"
  for who in "$xn" "$yn"; do
    local cmd=$x
    [ "$who" = "$yn" ] && cmd=$y
    rm -rf "$copy"
    cp -a "$run" "$copy"
    # shellcheck disable=SC2086
    if ! $cmd eval --run-dir "$copy" >"$copy.log" 2>&1; then
      echo "cross-version: $who could not evaluate the run"; tail -5 "$copy.log"; exit 1
    fi
    accuracies "$copy" >"$work/acc-$1-$3-by-$who"
  done
  # Two libtorch releases run different kernels (oneDNN versions): logits
  # differ in the last bits, so a near-tie may flip one of the 200 test
  # images; more than that is a checkpoint read wrongly.
  if ! /usr/bin/python3 - "$work/acc-$1-$3-by-$xn" "$work/acc-$1-$3-by-$yn" <<'PY'; then
import sys
a, b = (dict(l.split() for l in open(p)) for p in sys.argv[1:3])
bad = [k for k in a if k not in b or abs(float(a[k]) - float(b[k])) > 1.0 / 200 + 1e-9]
for k in sorted(a):
    print("  %-24s %s %s" % (k, a[k], b.get(k)))
sys.exit(1 if bad or a.keys() != b.keys() else 0)
PY
    echo "cross-version: $xn and $yn evaluate the same checkpoints to different accuracies"; exit 1
  fi
  echo "cross-version: every checkpoint of the run evaluated by $xn and by $yn, same accuracies (one image at most): ok"
}

mkdir -p "$work"
if [ ! -f "$work/data/manifest.json" ]; then
  # shellcheck disable=SC2086
  ${a_cmd%smoe}smoe-data convert fashion-mnist /usr/share/datasets/fashion-mnist "$work/data" --force >/dev/null
fi
one_direction A "$a_cmd" B "$b_cmd"
one_direction B "$b_cmd" A "$a_cmd"
echo "cross-version: passed"
