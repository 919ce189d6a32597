"""Does a rank's memory stay bounded as the data grow? Makes a synthetic
tiny-ImageNet-shaped dataset (3 x 64 x 64 uint8 images, 20 classes) at N and
at FACTOR x N training images (`smoe-data convert npy`), runs every stage of
configs/synthetic-64.yaml under `mpirun -np 2` on each, and prints each
rank's peak resident memory per stage (report.json, peak_rss_mb) and the
ratio of the large run's peak to the small run's.

  /usr/bin/python3 bench/memory_scaling.py [--n 5000] [--factor 4] [--budget-mb 8192] [--bin build/bin]
  /usr/bin/python3 bench/memory_scaling.py --single --n 100000 --budget-mb 2048   (one run: stage times and peaks)

The ratio the issue asks for is at most 1.2 for every stage; a stage above it
still holds something that grows with N (docs/memory.md)."""
import argparse
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def make_npy(folder, n_train, n_test, classes=20, seed=0):
    """Class-dependent colour blobs plus noise, written in chunks (nhwc)."""
    rng = np.random.default_rng(seed)
    means = rng.integers(40, 215, size=(classes, 1, 1, 3))
    os.makedirs(folder)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, classes, size=n).astype(np.int64)
        images = np.lib.format.open_memmap(os.path.join(folder, split + "_images.npy"), mode="w+", dtype=np.uint8,
                                           shape=(n, 64, 64, 3))
        for start in range(0, n, 2000):
            y = labels[start:start + 2000]
            noise = rng.normal(0, 40, size=(len(y), 64, 64, 3))
            images[start:start + 2000] = np.clip(means[y] + noise, 0, 255).astype(np.uint8)
        images.flush()
        del images
        np.save(os.path.join(folder, split + "_labels.npy"), labels)


def run(bin_dir, data, run_dir, budget_mb):
    cmd = ["mpirun", "-np", "2", "--oversubscribe", os.path.join(bin_dir, "smoe"), "train", "--config",
           os.path.join(SRC, "configs/synthetic-64.yaml"), "--run-dir", run_dir, "-q", "--set", "data.path=" + data,
           "--set", "runtime.threads=1", "--set", "runtime.memory_budget_mb=%d" % budget_mb]
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    with open(os.path.join(run_dir, "report.json")) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--budget-mb", type=int, default=8192)
    ap.add_argument("--bin", default=os.path.join(SRC, "build/bin"))
    ap.add_argument("--single", action="store_true", help="one run of N images: stage times and peaks")
    ap.add_argument("--tmp", default=None, help="folder for the data and runs (default: a temporary folder)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="smoe-memory-", dir=a.tmp)
    try:
        reports = {}
        for n in ((a.n,) if a.single else (a.n, a.factor * a.n)):
            src, data = os.path.join(tmp, "npy-%d" % n), os.path.join(tmp, "data-%d" % n)
            make_npy(src, n, 1000)
            subprocess.run([os.path.join(a.bin, "smoe-data"), "convert", "npy", src, data], check=True,
                           stdout=subprocess.DEVNULL)
            shutil.rmtree(src)
            reports[n] = run(a.bin, data, os.path.join(tmp, "run-%d" % n), a.budget_mb)
        if a.single:
            r = reports[a.n]
            print("%d training images, 2 ranks, budget %d MiB: trunk cache %s (%.0f MiB)"
                  % (a.n, a.budget_mb, r["trunk_cache"]["mode"], r["trunk_cache"]["bytes"] / 2**20))
            print("%-8s %10s %20s" % ("stage", "seconds", "peak MiB (ranks)"))
            for stage in ("base", "embed", "cluster", "gate", "experts", "eval"):
                print("%-8s %10.1f %20s" % (stage, r["stages"][stage],
                                            " / ".join("%.0f" % v for v in r["peak_rss_mb"][stage])))
            print("MoE bagging accuracy %.4f, base %.4f" % (r["moe"]["bagging"]["accuracy"], r["base"]["accuracy"]))
            return
        small, large = reports[a.n], reports[a.factor * a.n]
        print("peak resident memory per stage (MiB), ranks 0 / 1, %d and %d training images, budget %d MiB"
              % (a.n, a.factor * a.n, a.budget_mb))
        print("%-8s %18s %18s %8s %16s" % ("stage", "N", "%dN" % a.factor, "ratio", "seconds N / %dN" % a.factor))
        worst = 0.0
        for stage in ("base", "embed", "cluster", "gate", "experts", "eval"):
            p, q = small["peak_rss_mb"][stage], large["peak_rss_mb"][stage]
            ratio = max(q) / max(p)
            worst = max(worst, ratio)
            print("%-8s %8.0f / %7.0f %8.0f / %7.0f %8.2f %7.1f / %6.1f"
                  % (stage, p[0], p[1], q[0], q[1], ratio, small["stages"][stage], large["stages"][stage]))
        print("trunk cache: %s at N, %s at %dN" % (small["trunk_cache"]["mode"], large["trunk_cache"]["mode"],
                                                  a.factor))
        print("largest ratio: %.2f" % worst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
