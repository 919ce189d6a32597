"""Cluster-quality scores (cluster/quality.h) against scikit-learn on the same
clustering: bench_kmeans --assign scores a given clustering of Gaussian blobs
on 1, 2 and 3 ranks (ranks as threads); DBI, silhouette (whole-data sample),
NMI and ARI match sklearn.metrics to 1e-6 relative, purity matches its
definition on the contingency table, and every score is the same on any
rank count. A second case scores K-means' own clustering with outliers."""
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np
from sklearn import metrics

from test_kmeans_sklearn import BIN, blobs  # noqa: E402  (same folder)



def score(tmp, x, labels, assign, k, ranks, sample):
    paths = {name: os.path.join(tmp, name + ".npy") for name in ("x", "y", "a")}
    np.save(paths["x"], x)
    np.save(paths["y"], labels)
    np.save(paths["a"], assign)
    out = subprocess.run([os.path.join(BIN, "bench_kmeans"), paths["x"], str(k), "--labels", paths["y"], "--assign",
                          paths["a"], "--ranks", str(ranks), "--threads", "1", "--silhouette-sample", str(sample)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["quality"]


class QualityVsSklearn(unittest.TestCase):
    def test_scores_match_sklearn_and_do_not_depend_on_the_rank_count(self):
        x, labels = blobs(1500, 8, 6, seed=5)
        # A clustering that is neither the labels nor random: 6 labels folded onto 4 clusters, 10 % reshuffled.
        rng = np.random.default_rng(1)
        assign = labels % 4
        flip = rng.random(len(assign)) < 0.1
        assign[flip] = rng.integers(0, 4, size=flip.sum())
        with tempfile.TemporaryDirectory() as tmp:
            q = {r: score(tmp, x, labels, assign, 4, r, sample=10**6) for r in (1, 2, 3)}
        self.assertEqual(q[2], q[1])
        self.assertEqual(q[3], q[1])
        q = q[1]
        self.assertEqual(q["silhouette_rows"], len(x))
        self.assertAlmostEqual(q["davies_bouldin"], metrics.davies_bouldin_score(x, assign), delta=1e-6 * q["davies_bouldin"])
        self.assertAlmostEqual(q["silhouette"], metrics.silhouette_score(x, assign), delta=1e-5)
        self.assertAlmostEqual(q["nmi"], metrics.normalized_mutual_info_score(labels, assign), delta=1e-9)
        self.assertAlmostEqual(q["ari"], metrics.adjusted_rand_score(labels, assign), delta=1e-9)
        table = metrics.cluster.contingency_matrix(assign, labels)
        self.assertEqual(q["contingency"], table.tolist())
        self.assertAlmostEqual(q["purity"], table.max(1).sum() / len(x), delta=1e-12)
        centres = np.stack([x[assign == k].mean(0) for k in range(4)])
        inertia = sum(((x[assign == k] - centres[k]) ** 2).sum() for k in range(4))
        self.assertAlmostEqual(q["inertia"], inertia, delta=1e-5 * inertia)

    def test_outliers_are_left_out_and_counted(self):
        x, labels = blobs(600, 4, 3, seed=2)
        assign = labels.copy()
        assign[::10] = -1  # every tenth row an outlier
        with tempfile.TemporaryDirectory() as tmp:
            q = score(tmp, x, labels, assign, 3, 2, sample=10**6)
        kept = assign >= 0
        self.assertEqual(q["outliers"], 60)
        self.assertEqual(q["rows"], 600)
        self.assertEqual(sum(q["sizes"]), 540)
        self.assertEqual(q["purity"], 1.0)
        self.assertAlmostEqual(q["nmi"], 1.0, delta=1e-12)
        self.assertAlmostEqual(q["davies_bouldin"], metrics.davies_bouldin_score(x[kept], assign[kept]),
                               delta=1e-6 * q["davies_bouldin"])

    def test_a_silhouette_sample_is_the_same_rows_on_any_rank_count(self):
        x, labels = blobs(3000, 4, 5, seed=9)
        with tempfile.TemporaryDirectory() as tmp:
            q = {r: score(tmp, x, labels, labels, 5, r, sample=500) for r in (1, 3)}
        self.assertEqual(q[1]["silhouette"], q[3]["silhouette"])
        self.assertGreater(q[1]["silhouette_rows"], 350)
        self.assertLess(q[1]["silhouette_rows"], 650)
        self.assertAlmostEqual(q[1]["silhouette"], metrics.silhouette_score(x, labels), delta=0.03)


if __name__ == "__main__":
    unittest.main()
