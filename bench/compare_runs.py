"""Compares two finished run folders of the same config: the report's
accuracies and MACs (base, every MoE rule, the anytime grid, the envelope,
the specialisation metrics, the routing table) and the SHA-256 of every
checkpoint. Prints each difference and exits 1 if there is any.

  /usr/bin/python3 bench/compare_runs.py RUN_A RUN_B

Used to check that a restructuring left behaviour unchanged (same binary
inputs, same machine, same threads per rank: oneDNN picks its kernels by
instruction set, so hashes differ between machines)."""
import hashlib
import json
import os
import sys

REPORT_KEYS = ("base", "moe", "anytime", "envelope", "specialisation", "routing", "anytime_summary", "em_steps")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def checkpoints(run):
    out = {}
    for root, _, files in os.walk(run):
        for name in files:
            if name.endswith(".pt") or name.endswith(".f32"):
                path = os.path.join(root, name)
                out[os.path.relpath(path, run)] = sha(path)
    return out


def main(a, b):
    ra = json.load(open(os.path.join(a, "report.json")))
    rb = json.load(open(os.path.join(b, "report.json")))
    diffs = []
    for key in REPORT_KEYS:
        if ra.get(key) != rb.get(key):
            diffs.append("report.json %s: %s != %s" % (key, json.dumps(ra.get(key))[:200], json.dumps(rb.get(key))[:200]))
    if [e.get("moe") for e in ra.get("em", [])] != [e.get("moe") for e in rb.get("em", [])]:
        diffs.append("report.json em rounds differ")
    ca, cb = checkpoints(a), checkpoints(b)
    for name in sorted(set(ca) | set(cb)):
        if ca.get(name) != cb.get(name):
            diffs.append("%s: %s != %s" % (name, ca.get(name, "(missing)")[:16], cb.get(name, "(missing)")[:16]))
    for d in diffs:
        print("DIFFERENT", d)
    print("%d checkpoints and %d report fields compared: %s" %
          (len(set(ca) | set(cb)), len(REPORT_KEYS), "identical" if not diffs else "%d differences" % len(diffs)))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
