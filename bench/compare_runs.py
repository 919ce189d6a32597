"""Compares two finished run folders of the same config: every field of the
report (every rule's accuracy and MACs, the anytime grid, the envelope, the
specialisation metrics, the routing table, the experts' records, the
jointly trained MoE's figures, a fine-tuned section) except those that
vary from one run to the next (times, memory, traffic, provenance), and
the SHA-256 of every checkpoint. Prints each difference and exits 1 if
there is any.

  /usr/bin/python3 bench/compare_runs.py RUN_A RUN_B

Used to check that a restructuring left behaviour unchanged (same binary
inputs, same machine, same threads per rank: oneDNN picks its kernels by
instruction set, so hashes differ between machines)."""
import hashlib
import json
import os
import sys

# Fields that differ between two runs of the same binary: wall-clock and
# memory figures (any "*seconds" key too), traffic, where and when it ran,
# which rank took a task.
VOLATILE = {"stages", "peak_rss_mb", "stage_comm", "comm", "inference_time", "provenance", "runtime", "trunk_cache",
            "scheduler", "rank", "images_per_second"}


def volatile(key):
    return key in VOLATILE or key.endswith("seconds")


def stable(value):
    """The value without its volatile fields, at any depth."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if not volatile(k)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def report_diffs(ra, rb, path=""):
    """Each field (a dotted path) whose stable value differs."""
    if isinstance(ra, dict) and isinstance(rb, dict):
        out = []
        for k in sorted(set(ra) | set(rb)):
            out += report_diffs(ra.get(k), rb.get(k), path + "." + k if path else k)
        return out
    if isinstance(ra, list) and isinstance(rb, list) and len(ra) == len(rb):
        return sum((report_diffs(x, y, "%s.%d" % (path, i)) for i, (x, y) in enumerate(zip(ra, rb))), [])
    return [] if ra == rb else [path]


def leaves(value):
    if isinstance(value, dict):
        return sum(leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(leaves(v) for v in value)
    return 1


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


def get(value, path):
    for k in path.split("."):
        if isinstance(value, list) and k.isdigit():
            value = value[int(k)]
        else:
            value = value.get(k) if isinstance(value, dict) else None
    return value


def main(a, b):
    ra = json.load(open(os.path.join(a, "report.json")))
    rb = json.load(open(os.path.join(b, "report.json")))
    sa, sb = stable(ra), stable(rb)
    diffs = ["report.json %s: %s != %s" % (f, json.dumps(get(sa, f))[:200], json.dumps(get(sb, f))[:200])
             for f in report_diffs(sa, sb)]
    ca, cb = checkpoints(a), checkpoints(b)
    for name in sorted(set(ca) | set(cb)):
        if ca.get(name) != cb.get(name):
            diffs.append("%s: %s != %s" % (name, ca.get(name, "(missing)")[:16], cb.get(name, "(missing)")[:16]))
    for d in diffs:
        print("DIFFERENT", d)
    print("%d checkpoints and %d report fields compared: %s" %
          (len(set(ca) | set(cb)), leaves(sa), "identical" if not diffs else "%d differences" % len(diffs)))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
