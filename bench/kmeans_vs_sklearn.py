#!/usr/bin/python3
"""smoe's K-means against scikit-learn's KMeans on the same synthetic
embedding matrices (Gaussian blobs, float32): same k-means++ seeding scheme
(greedy, 2 + ln k local trials), one initialisation per run, same iteration
cap and tolerance, same number of threads; each side runs --seeds times with
different seeds (which seeds find every blob is luck), and the table shows
the summed time and the ratio of the mean inertias. Prints the time ratio (sklearn / smoe,
above 1 = smoe faster) and the inertia ratio (smoe / sklearn) per case.

  bench/kmeans_vs_sklearn.py [--bin build/bin] [--threads 2] [--quick]
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits
from sklearn.cluster import KMeans


def blobs(n, d, centres, seed):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)).astype(np.float32) * 3
    labels = rng.integers(0, centres, size=n)
    return (c[labels] + rng.normal(size=(n, d)).astype(np.float32)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "../build/bin"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--seeds", type=int, default=10,
                    help="independent single-initialisation runs per side (the inertia of one run is luck)")
    ap.add_argument("--quick", action="store_true", help="the two small cases only")
    ap.add_argument("--ranks", type=int, default=0,
                    help="> 0: smoe's distributed K-means on this many ranks-as-threads (seeded from a sample)")
    a = ap.parse_args()
    cases = [(60000, 128, 10), (60000, 128, 100), (200000, 512, 10), (200000, 512, 100)]
    if a.quick:
        cases = cases[:2]
    print("%8s %5s %5s %10s %10s %8s %10s" % ("n", "d", "K", "smoe_s", "sklearn_s", "speedup", "inertia"), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n, d, k in cases:
            x = blobs(n, d, max(k, 20), seed=n + d + k)
            path = os.path.join(tmp, "x.npy")
            np.save(path, x)
            ours_s, ours_inertia, sk_s, sk_inertia = 0.0, [], 0.0, []
            for seed in range(a.seeds):
                out = subprocess.run([os.path.join(a.bin, "bench_kmeans"), path, str(k), "--max-iter", str(a.max_iter),
                                      "--tol", str(a.tol), "--threads", str(a.threads), "--seed", str(seed),
                                      "--ranks", str(a.ranks)],
                                     capture_output=True, text=True, check=True)
                ours = json.loads(out.stdout)
                ours_s += ours["seconds"]
                ours_inertia.append(ours["inertia"])
                with threadpool_limits(limits=a.threads):
                    t0 = time.time()
                    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=a.max_iter, tol=a.tol,
                                algorithm="lloyd", random_state=seed).fit(x)
                    sk_s += time.time() - t0
                sk_inertia.append(km.inertia_)
            print("%8d %5d %5d %10.2f %10.2f %8.2f %10.4f" % (n, d, k, ours_s, sk_s, sk_s / ours_s,
                                                             np.mean(ours_inertia) / np.mean(sk_inertia)), flush=True)


if __name__ == "__main__":
    main()
