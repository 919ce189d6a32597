"""Distributed K-means against scikit-learn on Gaussian blobs: the inertia of
smoe's distributed K-means (bench_kmeans --ranks P, ranks as threads) is the
same on 1, 2 and 3 ranks and within 1 % of scikit-learn's, both with four
k-means++ restarts."""
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np
from sklearn.cluster import KMeans

SRC = os.environ.get("SMOE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
BIN = os.environ.get("SMOE_BIN", os.path.join(SRC, "build/bin"))


def blobs(n, d, centres, seed):
    """n points in d dimensions around `centres` Gaussian centres: (float32 [n, d], their centre int64 [n])."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)) * 3
    labels = rng.integers(0, centres, size=n)
    return (c[labels] + rng.normal(size=(n, d))).astype(np.float32), labels.astype(np.int64)


class DistributedKMeansVsSklearn(unittest.TestCase):
    def test_same_inertia_on_any_rank_count_and_within_one_percent_of_sklearn(self):
        x, _ = blobs(4000, 16, 10, seed=3)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.npy")
            np.save(path, x)
            inertia = {}
            for ranks in (1, 2, 3):
                out = subprocess.run([os.path.join(BIN, "bench_kmeans"), path, "10", "--restarts", "4", "--seed", "1",
                                      "--threads", "1", "--ranks", str(ranks)],
                                     capture_output=True, text=True, check=True)
                inertia[ranks] = json.loads(out.stdout)["inertia"]
        self.assertEqual(inertia[2], inertia[1])
        self.assertEqual(inertia[3], inertia[1])
        sk = KMeans(n_clusters=10, init="k-means++", n_init=4, max_iter=100, tol=1e-4, algorithm="lloyd",
                    random_state=1).fit(x).inertia_
        self.assertLess(abs(inertia[1] / sk - 1), 0.01, (inertia[1], sk))


if __name__ == "__main__":
    unittest.main()
