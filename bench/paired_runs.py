"""Wall time of two smoe builds on the same config, run alternately (A, B,
A, B, ...) so that the machine's drift hits both alike. Prints each run's
stage times (report.json) and, per stage, the mean of B / A.

  /usr/bin/python3 bench/paired_runs.py OLD/bin/smoe NEW/bin/smoe CONFIG PAIRS [--set key=value ...]

Runs under `mpirun -np 2` with one thread per rank in temporary run folders.
A build in another environment (launch/test-matrix.sh's chroots) is named
with the command that enters it: SMOE_PAIRED_PREFIX_B="chroot DIR" (and
_A), and SMOE_PAIRED_TMP a folder both see at the same path;
SMOE_PAIRED_SET_B="key=value ..." (and _A) sets keys for one side only
(e.g. runtime.device). Each row also prints the report's base and MoE
accuracies beside the times."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def run(label, binary, config, extra, folder):
    prefix = os.environ.get("SMOE_PAIRED_PREFIX_" + label, "").split()
    cmd = prefix + ["mpirun", "-np", "2", binary, "train", "--config", config, "--run-dir", folder, "-q",
           "--set", "runtime.threads=1"] + extra
    for kv in os.environ.get("SMOE_PAIRED_SET_" + label, "").split():
        cmd += ["--set", kv]
    start = time.time()
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    wall = time.time() - start
    with open(os.path.join(folder, "report.json")) as f:
        report = json.load(f)
    stages = dict(report["stages"])
    stages["wall"] = wall
    return stages, report["base"]["accuracy"], report["moe"]["bagging"]["accuracy"]


def main():
    a, b, config, pairs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    extra = sys.argv[5:]
    tmp = tempfile.mkdtemp(prefix="smoe-paired-", dir=os.environ.get("SMOE_PAIRED_TMP"))
    rows = {"A": [], "B": []}
    try:
        for i in range(pairs):
            for label, binary in (("A", a), ("B", b)):
                folder = os.path.join(tmp, "%s%d" % (label, i))
                stages, base_acc, acc = run(label, binary, config, extra, folder)
                rows[label].append(stages)
                print("%s run %d: wall %.1f s, base %.2f %%, bagging %.2f %%, stages %s" %
                      (label, i + 1, stages["wall"], 100 * base_acc, 100 * acc,
                       ", ".join("%s %.1f" % (k, v) for k, v in stages.items() if k != "wall")), flush=True)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nstage      A mean (s)  B mean (s)  B/A")
    for stage in rows["A"][0]:
        ma = sum(r[stage] for r in rows["A"]) / pairs
        mb = sum(r.get(stage, 0.0) for r in rows["B"]) / pairs
        print("%-9s %11.1f %11.1f  %.3f" % (stage, ma, mb, mb / ma if ma > 0 else float("nan")))


if __name__ == "__main__":
    main()
