"""The LEMUR study's three claims re-run with smoe on Fashion-MNIST
(configs/lemur/), each row over several seeds under `mpirun -np RANKS`, one
thread per rank: (1) the noisy top-2 MoE against its dense counterpart (the
same experts and gate, every expert on every sample); (2) the heterogeneous
four-backbone MoE against each backbone alone (the paper's claim: the
mixture beats its best single backbone); (3) Royer et al.'s Algorithm 1 with
heterogeneous experts against homogeneous ones. Prints mean +- std of the
test error with MACs per image; run folders are kept and reused.

  /usr/bin/python3 bench/lemur_table.py --runs runs/lemur [--seeds 0 1 2] [--set key=value ...]"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from krishnamurthy_table import ROOT, mean_std, metrics, run  # noqa: E402

CFG = os.path.join(ROOT, "configs", "lemur")
HET = os.path.join(CFG, "fmnist-heterogeneous.yaml")
ROWS = [
    ("1", "noisy top-2, shared trunk + 8 FC experts", os.path.join(CFG, "fmnist-top2.yaml"), []),
    ("1", "dense at equal MACs: the trunk + 2 FC experts", os.path.join(CFG, "fmnist-dense.yaml"),
     ["experts.count=2"]),
    ("1", "dense, the trunk + the same 8 experts", os.path.join(CFG, "fmnist-dense.yaml"), []),
    ("2", "heterogeneous MoE (4 backbones)", HET, []),
] + [("2", "%s alone" % a, HET, ["experts.count=1", "experts.archs=[%s]" % a])
     for a in ("alexnet", "densenet", "bagnet", "small_cnn")] + [
    ("3", "Algorithm 1, heterogeneous experts", os.path.join(CFG, "fmnist-algorithm1-heterogeneous.yaml"), []),
    ("3", "Algorithm 1, homogeneous experts", os.path.join(CFG, "fmnist-algorithm1-heterogeneous.yaml"),
     ["experts.archs=[]"]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--smoe", default=os.path.join(ROOT, "build", "bin", "smoe"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--claims", nargs="+", default=["1", "2", "3"], help="the claims whose rows to run")
    a = ap.parse_args()
    print("| claim | model | test error, mean ± std (n=%d) | top-1 routing error | MMACs / image (top-1) |" % len(a.seeds))
    print("|---|---|---|---|---|")
    for claim, label, config, extra in ROWS:
        if claim not in a.claims:
            continue
        name = label.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
        reports = [run(a.smoe, config, os.path.join(a.runs, "%s-seed%d" % (name, s)), s, a.ranks, a.sets + extra)
                   for s in a.seeds]
        m = [metrics(r) for r in reports]
        print("| %s | %s | %s | %s | %.3f (%.3f) |" % (
            claim, label, mean_std([x["error"] for x in m]), mean_std([x["top1"] for x in m]),
            statistics.mean(x["macs"] for x in m) / 1e6, statistics.mean(x["top1_macs"] for x in m) / 1e6),
            flush=True)


if __name__ == "__main__":
    main()
