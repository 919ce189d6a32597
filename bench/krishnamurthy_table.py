"""Krishnamurthy et al.'s Fashion-MNIST table re-run with smoe: each row of
configs/krishnamurthy/ over several seeds, under `mpirun -np RANKS` with one
thread per rank. Prints (Markdown) and writes (CSV) per row: the paper's
test error, smoe's mixture test error mean +- std over the seeds, the
paper's pick (the seed with the lowest training error) and its test error,
top-1 routing's error and MACs, and the specialisation metrics (bits).
`--rows algorithm1` adds Royer et al.'s Algorithm 1 with the same K on the
same data (configs/krishnamurthy/fmnist-algorithm1.yaml; its error is the
MoE with bagging, its top-1 the top-1 expert without ensembling).

  /usr/bin/python3 bench/krishnamurthy_table.py --runs runs/krishnamurthy [--seeds 0 1 2]
      [--rows vanilla importance ...] [--ranks 2] [--set key=value ...]

Run folders are kept under --runs and reused: a finished run (report.json)
is not run again, so an interrupted table resumes where it stopped.
--set applies to every run (e.g. data.limit_train=20000 joint.epochs=5 for a
shorter protocol than the paper's 60k images x 20 epochs)."""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
# Test errors of the paper's Fashion-MNIST table (best of 10 runs by training error).
ROWS = [
    ("single", "single model", 0.132),
    ("vanilla", "vanilla MoE", 0.104),
    ("importance", "+ L_imp", 0.103),
    ("similarity", "+ L_s", 0.095),
    ("attentive", "attentive", 0.098),
    ("attentive-importance", "attentive + L_imp", 0.098),
    ("attentive-similarity", "attentive + L_s", 0.096),
    ("distilled-importance", "distilled after L_imp", 0.087),
    ("distilled-similarity", "distilled after L_s", 0.089),
    # Royer et al.'s Algorithm 1 with the same K (bagging; top-1 without ensembling); no paper value.
    ("algorithm1", "Royer Algorithm 1 (K = 5)", None),
    # The vanilla MoE widened to Algorithm 1's MACs (4.9 MMACs per image): the equal-MACs comparison.
    ("vanilla-wide", "vanilla MoE at Algorithm 1's MACs (width 29)", None),
    # Algorithm 1, then its MoE trained further (smoe's scheme algorithm1_finetune): gate and experts
    # together, or only the gate on the frozen experts (the paper's Section 4.2 protocol). They start
    # from the algorithm1 row's run folder of the same seed when it exists (only the finetune stage runs).
    ("algorithm1-finetune", "Royer Algorithm 1 + joint fine-tuning (2 epochs)", None),
    ("algorithm1-gate", "Royer Algorithm 1 + its gate trained on the frozen experts (2 epochs)", None),
]


def metrics(r):
    """Test error, top-1 error, MACs, training error and images/s of a run's report."""
    if "finetuned" in r:  # Algorithm 1 trained further: its jointly trained mixture
        f = r["finetuned"]
        return {"error": 1 - f["mixture"]["accuracy"], "top1": 1 - f["top1"]["accuracy"], "macs": f["mixture"]["macs"],
                "top1_macs": f["top1"]["macs"], "train_error": f["train_error"],
                "ips": f["training"]["finetune"]["images_per_second"]}
    if "moe" in r:  # Algorithm 1: the MoE with bagging is its model; top-1 expert without ensembling
        bag, top1 = r["moe"]["bagging"], r["moe"]["no_ensembling"]
        return {"error": 1 - bag["accuracy"], "top1": 1 - top1["accuracy"], "macs": bag["macs"],
                "top1_macs": top1["macs"], "train_error": None, "ips": None}
    return {"error": 1 - r["mixture"]["accuracy"], "top1": 1 - r["top1"]["accuracy"], "macs": r["mixture"]["macs"],
            "top1_macs": r["top1"]["macs"], "train_error": r["train_error"],
            "ips": r["training"]["joint"]["images_per_second"]}


def run(smoe, config, folder, seed, ranks, extra, start_from=None):
    report = os.path.join(folder, "report.json")
    if not os.path.exists(report) and start_from and os.path.exists(os.path.join(start_from, "report.json")) \
            and not os.path.exists(folder):
        shutil.copytree(start_from, folder)  # its finished stages are reused; report.json is rewritten
        os.remove(os.path.join(folder, "report.json"))
    if not os.path.exists(report):
        mode = ["--resume"] if os.path.exists(os.path.join(folder, "run.json")) else []
        cmd = ["mpirun", "-np", str(ranks), "--bind-to", "core", smoe, "train", "--config", config, "--run-dir",
               folder, "-q", "--set", "runtime.threads=1", "--set", "seed=%d" % seed] + mode
        for s in extra:
            cmd += ["--set", s]
        start = time.time()
        subprocess.run(cmd, check=True, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL)
        print("  %s: %.0f s" % (folder, time.time() - start), file=sys.stderr, flush=True)
    with open(report) as f:
        return json.load(f)


def mean_std(values):
    if len(values) < 2:
        return "%.4f" % values[0]
    return "%.4f ± %.4f" % (statistics.mean(values), statistics.stdev(values))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS if not r[0].startswith("algorithm1") and r[0] != "vanilla-wide"],
                    help="rows to run (the algorithm1 and vanilla-wide rows only when named)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--smoe", default=os.path.join(ROOT, "build", "bin", "smoe"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    a = ap.parse_args()
    table = []
    for name, label, paper in ROWS:
        if name not in a.rows:
            continue
        config = os.path.join(ROOT, "configs", "krishnamurthy", "fmnist-%s.yaml" % name)
        start = (lambda s: os.path.join(a.runs, "algorithm1-seed%d" % s)) if name.startswith("algorithm1-") \
            else (lambda s: None)
        reports = [run(a.smoe, config, os.path.join(a.runs, "%s-seed%d" % (name, s)), s, a.ranks, a.sets, start(s))
                   for s in a.seeds]
        m = [metrics(r) for r in reports]
        err = [x["error"] for x in m]
        spec = {k: statistics.mean(r.get("finetuned", r)["specialisation"][k] for r in reports)
                for k in ("gate_entropy", "usage_entropy", "mutual_information")}
        if m[0]["train_error"] is not None:
            pick = min(range(len(m)), key=lambda i: m[i]["train_error"])
            best = "%.4f (seed %d)" % (err[pick], a.seeds[pick])
            ips = statistics.mean(x["ips"] for x in m)
        else:
            best, ips = "—", None
        table.append({
            "row": label, "paper_test_error": paper, "seeds": len(reports),
            "test_error": mean_std(err), "test_error_mean": statistics.mean(err), "best_by_train_error": best,
            "top1_error": mean_std([x["top1"] for x in m]),
            "mixture_mmacs": statistics.mean(x["macs"] for x in m) / 1e6,
            "top1_mmacs": statistics.mean(x["top1_macs"] for x in m) / 1e6,
            "gate_entropy": spec["gate_entropy"], "usage_entropy": spec["usage_entropy"],
            "mutual_information": spec["mutual_information"], "joint_images_per_s": ips})
    cols = ["row", "paper_test_error", "test_error", "best_by_train_error", "top1_error", "mixture_mmacs",
            "top1_mmacs", "gate_entropy", "usage_entropy", "mutual_information"]
    print("| row | paper | smoe mixture (mean ± std, n=%d) | smoe best by train error | top-1 routing | MMACs mixture / top-1 "
          "| H_gate | H_usage | I(E;Y) |" % len(a.seeds))
    print("|---|---|---|---|---|---|---|---|---|")
    for t in table:
        print("| %s | %s | %s | %s | %s | %.3f / %.3f | %.3f | %.3f | %.3f |" % (
            t["row"], "—" if t["paper_test_error"] is None else "%.3f" % t["paper_test_error"], t["test_error"], t["best_by_train_error"], t["top1_error"],
            t["mixture_mmacs"], t["top1_mmacs"], t["gate_entropy"], t["usage_entropy"], t["mutual_information"]))
    with open(os.path.join(a.runs, "table.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0].keys()))
        w.writeheader()
        w.writerows(table)
    print("\nCSV: %s" % os.path.join(a.runs, "table.csv"))


if __name__ == "__main__":
    main()
