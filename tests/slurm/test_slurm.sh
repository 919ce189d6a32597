#!/usr/bin/env bash
# A real single-node Slurm on localhost: installs Debian's slurmctld, slurmd,
# slurm-client and munge (no recommends), starts munged, slurmctld and slurmd
# with a private config, state and spool under a temporary folder (no systemd,
# no cgroups; task/affinity binds the tasks), then through the batch scripts
# users submit: slurm/train.sbatch on the quick config with 2 tasks x 1 cpu
# and 1 task x 2 cpus (the cores and threads each rank reports), a scaling
# study (slurm/scaling.sbatch), and slurm/resubmit.sbatch through real time-limit expiries in the
# middle of the base stage, reached at a named point (same hashes as an
# uninterrupted run, at most one epoch redone). It stops exactly the daemons it started, also when it fails.
# Needs root (it installs packages and runs the daemons).
set -euo pipefail
SRC="${SMOE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
BIN="${SMOE_BIN:-$SRC/build/bin}"
if [ "$(id -u)" != 0 ]; then echo "test_slurm: needs root; skipped"; exit 77; fi

pkgs=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi

# Its jobs run 2 tasks of 1 CPU: with fewer CPUs to give (a run pinned to one
# core, e.g. SMOE_LOAD_CORES=0 launch/test-under-load.sh) they would pend for
# ever (PartitionConfig), so the test skips and says why.
if [ "$(nproc)" -lt 2 ]; then echo "test_slurm: its jobs need 2 CPUs and this process may use $(nproc); skipped"; exit 77; fi

T="$(mktemp -d /tmp/smoe-slurm-XXXXXX)"
chmod 0755 "$T"   # munged wants every folder above its socket to be searchable
pids=()
cleanup() {
  set +e
  if [ -n "${SLURM_CONF:-}" ]; then
    scancel --quiet --user=root >/dev/null 2>&1   # job steps outlive slurmd: cancel first
    sleep 1
  fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  [ -n "${SMOE_KEEP_SLURM_TMP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

mkdir -p "$T/munge" "$T/state" "$T/spool" "$T/log" "$T/work"
chmod 0755 "$T/munge"
dd if=/dev/urandom of="$T/munge.key" bs=1024 count=1 status=none
chmod 0400 "$T/munge.key"
munged --force --key-file="$T/munge.key" --socket="$T/munge/munge.socket.2" --pid-file="$T/munged.pid" \
  --log-file="$T/log/munged.log" --seed-file="$T/munge.seed" --foreground >"$T/log/munged.out" 2>&1 &
pids+=($!)
# Waits for daemons to come up poll with a bound only a hang reaches.
for _ in $(seq 1200); do [ -S "$T/munge/munge.socket.2" ] && break; sleep 0.1; done

host="$(hostname -s)"
cpus="$(nproc)"
cat > "$T/slurm.conf" <<CONF
ClusterName=smoetest
SlurmctldHost=$host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.socket.2
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
# Slurm 23 and later initialise a cgroup plugin even with proctrack/linuxproc
# and stop when /sys/fs/cgroup is not mounted (a chroot, a container):
# without cgroups, as above, say so (22.05 has no such key).
slurm_major="$(slurmd -V 2>/dev/null | sed -n 's/^slurm[^0-9]*\([0-9]*\)\..*/\1/p')"
if [ "${slurm_major:-0}" -ge 23 ]; then echo "CgroupPlugin=disabled" >"$T/cgroup.conf"; fi
export SLURM_CONF="$T/slurm.conf"
slurmctld -D -f "$SLURM_CONF" -i >"$T/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$T/log/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
  state="$(sinfo -h -o %T 2>/dev/null || true)"
  case "$state" in idle*) break ;; esac
  # A daemon that exited will not come up: say why now, not at the bound.
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "test_slurm: a Slurm daemon exited at start"; tail -20 "$T"/log/*.log; exit 1; }
  done
  sleep 0.2
done
sinfo -h -o '%P %T %c' || true
case "$(sinfo -h -o %T 2>/dev/null)" in idle*) ;; *) echo "test_slurm: node never became idle"; tail -20 "$T"/log/*.log; exit 1 ;; esac

# The quick config on 2 tasks, through the batch script users submit.
data="$T/work/fmnist"
"$BIN/smoe-data" convert fashion-mnist /usr/share/datasets/fashion-mnist "$data" >/dev/null
run="$T/work/run"
cd "$SRC"
jobid="$(CONFIG=configs/fmnist-quick.yaml RUN_DIR="$run" SMOE="$BIN/smoe" \
  SMOE_ARGS="--set data.path=$data --set base.epochs=2 --set experts.epochs=1 -q" \
  sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$T/work/job-%j.out" --chdir="$SRC" slurm/train.sbatch)"
echo "test_slurm: submitted job $jobid"
# A job has ended when slurmctld lists it (in any state, -t all) and every
# element is in a final state. An empty answer is not an end: a requeued job
# passes through states squeue's default filter hides, and a slurmctld busy
# on a loaded machine may not answer a query in time.
job_ended() {
  local states
  states="$(squeue -h -j "$1" -t all -o %T 2>/dev/null)" || return 1
  [ -n "$states" ] || return 1
  ! grep -qvE '^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)$' <<<"$states"
}
wait_job() {  # job id, seconds (hang detection: the jobs take seconds to minutes)
  local deadline=$((SECONDS + $2))
  until job_ended "$1"; do
    [ $SECONDS -lt $deadline ] || { echo "test_slurm: job $1 did not finish in time"; cat "$T"/work/*.out; exit 1; }
    sleep 1
  done
}
wait_job "$jobid" 1800
cat "$T/work/job-$jobid.out"
state="$(scontrol show job "$jobid" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')"
echo "test_slurm: job $jobid ended ${state:-(state purged)}"
/usr/bin/python3 - "$run/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ranks"] == 2, r["ranks"]
assert r["num_experts"] == 4
assert r["moe"]["bagging"]["accuracy"] > 0.5, r["moe"]
print("test_slurm: report ok: %d ranks, base %.3f, MoE bagging %.3f" % (r["ranks"], r["base"]["accuracy"], r["moe"]["bagging"]["accuracy"]))
# --cpus-per-task=1: each rank on its own core, one thread (SLURM_CPUS_PER_TASK, srun -c).
ranks = r["provenance"]["ranks"]
print("test_slurm: -c 1:", ", ".join("rank %d cores %s threads %d" % (x["rank"], x["affinity"], x["threads"]) for x in ranks))
assert [x["threads"] for x in ranks] == [1, 1], ranks
assert [x["cores"] for x in ranks] == [1, 1], ranks
assert ranks[0]["affinity"] != ranks[1]["affinity"], ranks
PY

# --cpus-per-task=2: one rank on both cores with two threads.
if [ "$cpus" -ge 2 ]; then
  run_c2="$T/work/run-c2"
  job_c2="$(CONFIG=configs/fmnist-quick.yaml RUN_DIR="$run_c2" SMOE="$BIN/smoe" \
    SMOE_ARGS="--set data.path=$data --set data.limit_train=1000 --set base.epochs=1 --set experts.epochs=1 --set ensembler.epochs=1 -q" \
    sbatch --parsable --ntasks=1 --ntasks-per-node=1 --cpus-per-task=2 --output="$T/work/c2-%j.out" --chdir="$SRC" slurm/train.sbatch)"
  wait_job "$job_c2" 1800
  /usr/bin/python3 - "$run_c2/report.json" <<'PY'
import json, sys
ranks = json.load(open(sys.argv[1]))["provenance"]["ranks"]
print("test_slurm: -c 2:", ", ".join("rank %d cores %s threads %d" % (x["rank"], x["affinity"], x["threads"]) for x in ranks))
assert [(x["cores"], x["threads"]) for x in ranks] == [(2, 2)], ranks
PY
fi

# A scaling study as one batch job of 2 tasks: strong, P = 1 and 2, only the
# experts and the evaluation timed (the earlier stages once, on both tasks).
study="$T/work/scaling"
job_s="$(CONFIG=configs/fmnist-quick.yaml RANKS=1,2 STAGES=experts,eval OUT="$study" SMOE="$BIN/smoe" \
  SMOE_ARGS="--set data.path=$data --set data.limit_train=1000 --set base.epochs=1 --set experts.epochs=1 --set ensembler.epochs=1 -q" \
  sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$T/work/scaling-%j.out" --chdir="$SRC" slurm/scaling.sbatch)"
echo "test_slurm: submitted scaling study $job_s"
wait_job "$job_s" 1800
/usr/bin/python3 - "$study" <<'PY' || { cat "$T"/work/scaling-*.out; exit 1; }
import csv, json, os, sys
study = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(study, "scaling.csv"))))
measured = [(x["stage"], x["ranks"]) for x in rows if x["source"] == "measured"]
assert measured == [("experts", "1"), ("experts", "2"), ("eval", "1"), ("eval", "2")], measured
for x in rows:
    if x["source"] == "measured":
        report = json.load(open(os.path.join(study, "P" + x["ranks"], "report.json")))
        assert report["ranks"] == int(x["ranks"]), (x, report["ranks"])
        assert abs(float(x["seconds"]) - report["stages"][x["stage"]]) <= 1e-5 * report["stages"][x["stage"]], x
md = open(os.path.join(study, "scaling.md")).read()
assert "accuracies of report.json are equal at P = 1, 2" in md, md
print("test_slurm: scaling study ok:", ", ".join("%s P=%s %.1f s" % (x["stage"], x["ranks"], float(x["seconds"]))
                                                for x in rows if x["source"] == "measured"))
PY

# A job that reaches its time limit inside the base stage, at a named point
# whatever the machine's speed: rank 0 waits right after base epoch 2's
# checkpoint (SMOE_FAULT=wait:base-epoch-2:0) until Slurm signals the batch
# script before the limit (--signal=B:USR1@80 with --time=2: 40 s into the
# start); the script stops smoe (which exits 75 at the next step, in epoch 3)
# and requeues the job, which resumes after epoch 2 and no longer passes
# that point. Should a start run into its limit elsewhere (a machine so slow
# that 40 s do not cover a start), it requeues again: any number of requeues
# ends with the hashes of the same run made uninterrupted. The deadlines in
# this file are hang detection: each job here takes seconds to about a minute.
run2="$T/work/run-requeue"
requeue_args="--set data.path=$data --set data.limit_train=1500 --set base.epochs=5 --set experts.epochs=1 --set ensembler.epochs=1"
job2="$(CONFIG=configs/fmnist-quick.yaml RUN_DIR="$run2" SMOE="$BIN/smoe" SMOE_ARGS="$requeue_args" \
  SMOE_FAULT=wait:base-epoch-2:0 \
  sbatch --parsable --ntasks=2 --cpus-per-task=1 --time=2 --signal=B:USR1@80 \
  --output="$T/work/requeue-%j.out" --chdir="$SRC" slurm/resubmit.sbatch)"
echo "test_slurm: submitted job $job2 (time limit 2 min, signalled 40 s into a start; it waits for the signal after base epoch 2)"
gone() {  # pgrep pattern: true once no process matches
  ! pgrep -f "$1" >/dev/null
}
deadline=$((SECONDS + 1800))
restarts_seen=0
until job_ended "$job2"; do
  [ $SECONDS -lt $deadline ] || { echo "test_slurm: job $job2 did not finish in time (hang)"; cat "$T"/work/requeue-*.out; exit 1; }
  # Slurm holds a requeued job (BeginTime) before it may start again: release
  # it once the old step's processes and slurmstepd are gone and slurmctld
  # lists no step of it (a restarted job whose step starts before the old
  # slurmstepd is gone sees its launch aborted).
  if squeue -h -j "$job2" -o %T 2>/dev/null | grep -q PENDING; then
    while ! gone "run-dir $run2" || ! gone "slurmstepd: \\[$job2\\.0\\]" || squeue -h -s -j "$job2" 2>/dev/null | grep -q .; do
      [ $SECONDS -lt $deadline ] || { echo "test_slurm: job $job2's old step never ended (hang)"; exit 1; }
      sleep 0.5
    done
    scontrol update JobId="$job2" StartTime=now 2>/dev/null || true
    restarts_seen=$((restarts_seen + 1))
  fi
  sleep 1
done
cat "$T/work/requeue-$job2.out"
grep -q "requeueing" "$T/work/requeue-$job2.out" || { echo "test_slurm: the job did not requeue"; exit 1; }
grep -q "(restart 1): train .*--resume" "$T/work/requeue-$job2.out" || { echo "test_slurm: the requeued job did not resume"; exit 1; }
[ -f "$run2/report.json" ] || { echo "test_slurm: the requeued job did not finish the run"; exit 1; }
# The same run, uninterrupted.
ref="$T/work/run-reference"
read -r -a ref_args <<< "$requeue_args"
mpirun -np 2 --oversubscribe --allow-run-as-root "$BIN/smoe" train --config configs/fmnist-quick.yaml --run-dir "$ref" \
  --set runtime.threads=1 -q "${ref_args[@]}"
/usr/bin/python3 - "$run2" "$ref" "$T/work/requeue-$job2.out" <<'PY'
import json, re, sys
run, ref, out = sys.argv[1:4]
a = json.load(open(run + "/run.json"))["done"]
b = json.load(open(ref + "/run.json"))["done"]
assert a["base"]["sha256"] == b["base"]["sha256"], "the requeued run's base model differs from the uninterrupted one"
ra, rb = json.load(open(run + "/report.json")), json.load(open(ref + "/report.json"))
assert ra["moe"] == rb["moe"] and ra["base"] == rb["base"], "the requeued run's report differs"
log = open(out).read()
stops = [(int(m.group(1)), int(m.group(2))) for m in re.finditer(r"reached the job in epoch (\d+): it resumes after epoch (\d+)", log)]
resumes = [int(m.group(1)) for m in re.finditer(r"resuming after epoch (\d+) of", log)]
assert (3, 2) in stops, "smoe never stopped in base epoch 3 after waiting at base-epoch-2: %s" % stops
for stopped_in, kept in stops:
    assert stopped_in - kept == 1, (stopped_in, kept)   # at most the epoch in progress is redone
print("test_slurm: time-limit requeues: stopped in epochs %s, resumed after %s; base and report equal the uninterrupted run's; "
      "work redone per requeue: less than one epoch" % ([e for e, _ in stops], resumes))
PY
echo "test_slurm: requeued job resumed and finished with the uninterrupted run's hashes"
