"""DFCP-MoE's comparison (its Table 3 protocol) re-run with smoe on
Fashion-MNIST, clean and with symmetric label noise on the training split:
the dense base model, a traditional jointly trained MoE (scheme joint, CNN
gate, small-CNN experts), Royer et al.'s Algorithm 1 with K-means routing,
and DFCP-MoE (scheme dfcp: pseudo-labels from a trusted tenth of the
samples, double-stage clustering). Each cell is mean +- std over seeds of
test accuracy, mAP, balanced accuracy, measured inference ms per sample
(rank 0, one thread, batch eval.batch_size) and training time; a second
table compares the clusters (DBI, purity, NMI against the true labels) of
K-means and DFCP on the same embeddings. Algorithm 1 reuses the DFCP run's
base model and embeddings (--redo-from cluster), so the two differ only in
the labels and the clusters. Run folders are kept and reused.

  /usr/bin/python3 bench/dfcp_table.py --runs runs/dfcp [--noise 0 0.2 0.4] [--seeds 0 1 2] [--set key=value ...]"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
QUICK = os.path.join(ROOT, "configs", "dfcp", "fmnist-dfcp.yaml")
JOINT = os.path.join(ROOT, "configs", "krishnamurthy", "fmnist-vanilla.yaml")


def train(smoe, config, folder, ranks, sets, extra=()):
    report = os.path.join(folder, "report.json")
    if os.path.exists(report):
        return json.load(open(report))
    mode = ["--resume"] if os.path.exists(os.path.join(folder, "run.json")) else []
    cmd = ["mpirun", "-np", str(ranks), "--bind-to", "core", "--allow-run-as-root", smoe, "train", "--config", config,
           "--run-dir", folder, "-q", "--set", "runtime.threads=1"] + mode + list(extra)
    for s in sets:
        cmd += ["--set", s]
    start = time.time()
    subprocess.run(cmd, check=True, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL)
    print("  %s: %.0f s" % (folder, time.time() - start), file=sys.stderr, flush=True)
    return json.load(open(report))


def ms(values, digits=4):
    if len(values) < 2:
        return ("%." + str(digits) + "f") % values[0]
    return ("%." + str(digits) + "f ± %." + str(digits) + "f") % (statistics.mean(values), statistics.stdev(values))


def seconds(run_dir, stages):
    done = json.load(open(os.path.join(run_dir, "run.json")))["done"]
    return sum(done[s].get("seconds", 0.0) for s in stages if s in done)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--smoe", default=os.path.join(ROOT, "build", "bin", "smoe"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--joint-set", dest="joint_sets", action="append", default=[])
    a = ap.parse_args()
    rows, clusters = [], []
    for noise in a.noise:
        cells = {k: [] for k in ("dense", "joint", "algorithm1", "dfcp")}
        quality = {"kmeans": [], "dfcp": []}
        pseudo = []
        for seed in a.seeds:
            common = a.sets + ["seed=%d" % seed, "data.label_noise=%g" % noise]
            tag = "noise%g-seed%d" % (noise, seed)
            dfcp_dir = os.path.join(a.runs, "dfcp-" + tag)
            d = train(a.smoe, QUICK, dfcp_dir, a.ranks, common)
            alg_dir = os.path.join(a.runs, "algorithm1-" + tag)
            if not os.path.exists(os.path.join(alg_dir, "report.json")):
                if os.path.exists(alg_dir):
                    shutil.rmtree(alg_dir)
                shutil.copytree(dfcp_dir, alg_dir, ignore=shutil.ignore_patterns("report.json", "*.png", "*.lock"))
                train(a.smoe, QUICK, alg_dir, a.ranks, common + ["scheme=algorithm1", "cluster.method=kmeans"],
                      ["--redo-from", "cluster"])
            k = json.load(open(os.path.join(alg_dir, "report.json")))
            j = train(a.smoe, JOINT, os.path.join(a.runs, "joint-" + tag), a.ranks,
                      common + [s for s in a.sets if s.startswith("data.")] + a.joint_sets)
            base_s = seconds(dfcp_dir, ["base"])
            cells["dense"].append((d["base"], d["inference_time"]["ms_per_sample"]["base"], base_s))
            cells["algorithm1"].append((k["moe"]["bagging"], k["inference_time"]["ms_per_sample"]["moe_top1"],
                                        base_s + seconds(alg_dir, ["embed", "cluster", "gate", "experts"])))
            cells["dfcp"].append((d["moe"]["bagging"], d["inference_time"]["ms_per_sample"]["moe_top1"],
                                  seconds(dfcp_dir, ["base", "embed", "pseudo_label", "cluster", "gate", "experts"])))
            cells["joint"].append((j["mixture"], j["inference_time"]["ms_per_sample"]["mixture"],
                                   seconds(os.path.join(a.runs, "joint-" + tag), ["joint"])))
            quality["kmeans"].append(k["cluster_quality"])
            quality["dfcp"].append(d["cluster_quality"])
            pseudo.append(json.load(open(os.path.join(dfcp_dir, "run.json")))["done"]["pseudo_label"])
        for name, label in (("dense", "dense (the base model)"), ("joint", "traditional MoE (joint, CNN gate)"),
                            ("algorithm1", "Algorithm 1 (K-means routing, bagging)"),
                            ("dfcp", "DFCP-MoE (pseudo-labels + double-stage clusters, bagging)")):
            c = cells[name]
            rows.append("| %g | %s | %s | %s | %s | %s | %s |" % (
                noise, label, ms([x[0]["accuracy"] for x in c]), ms([x[0]["map"] for x in c]),
                ms([x[0]["balanced_accuracy"] for x in c]), ms([x[1] for x in c], 3), ms([x[2] for x in c], 0)))
        for name in ("kmeans", "dfcp"):
            q = quality[name]
            clusters.append("| %g | %s | %s | %s | %s | %s |" % (
                noise, name, ms([x["davies_bouldin"] for x in q], 3), ms([x["purity"] for x in q], 3),
                ms([x["nmi"] for x in q], 3), ms([x["outliers"] / x["rows"] for x in q], 3)))
        rows.append("| %g | (pseudo-labels: training labels right) | given %s → %s | | | | |" % (
            noise, ms([p["given_label_accuracy"] for p in pseudo], 3), ms([p["training_label_accuracy"] for p in pseudo], 3)))
    n = len(a.seeds)
    print("| label noise | model | accuracy (n=%d) | mAP | balanced accuracy | ms / sample | training s |" % n)
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("| label noise | clusters | DBI | purity | NMI | outlier share |")
    print("|---|---|---|---|---|---|")
    print("\n".join(clusters))


if __name__ == "__main__":
    main()
