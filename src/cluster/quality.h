// Cluster quality, reported for every run whatever the initial-gate strategy
// (DFCP-MoE Section 3.1; the scores scikit-learn's sklearn.metrics computes,
// with the same definitions and edge cases):
//  - internal: inertia (sum of squared distances to the cluster means),
//    Davies-Bouldin index DBI = (1/K) sum_i max_{j != i} (s_i + s_j) / |c_i - c_j|
//    with s_i the mean distance of cluster i's points to its mean, and the
//    silhouette on a sample of the rows;
//  - against the labels: purity (1/N) sum_k max_c |w_k n c| (and per cluster),
//    normalised mutual information (arithmetic mean of the entropies) and the
//    adjusted Rand index, all from the K x C contingency table.
// The collective form keeps a rank's memory bounded: only [K, D] sums, the
// contingency table and the silhouette sample (rows chosen by a hash of
// their global id, so the same rows on any number of ranks) cross ranks, and
// every sum is in fixed point: the same bits on 1, 2 or P ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "comm/communicator.h"

namespace smoe::cluster {

// int64 [K, C]: how many rows of each cluster carry each label. assign and
// labels are int64 [n]; a row with assign < 0 (an outlier) is not counted.
at::Tensor contingency(const at::Tensor& assign, const at::Tensor& labels, int64_t K, int64_t C);

// From a contingency table (int64 [K, C]).
double purity(const at::Tensor& table);
std::vector<double> cluster_purity(const at::Tensor& table);  // per cluster; NaN for an empty one
double normalized_mutual_info(const at::Tensor& table);
double adjusted_rand_index(const at::Tensor& table);

// Davies-Bouldin index from the cluster means [K, d], the mean distances s
// [K] and the sizes [K] (empty clusters are left out); 0 with < 2 clusters.
double davies_bouldin(const at::Tensor& means, const at::Tensor& scatter, const at::Tensor& sizes);
// The same from rows x [n, d] and their clusters assign [n] (one process).
double davies_bouldin(const at::Tensor& x, const at::Tensor& assign, int64_t K);

// Mean silhouette coefficient of the rows x [n, d] in clusters assign [n]
// (exact, O(n^2 d): give it a sample); NaN unless 2 <= clusters <= n - 1.
double silhouette(const at::Tensor& x, const at::Tensor& assign, int64_t K);

// The clusters' means [K, d], sizes [K] (int64), mean distances to the mean
// s [K] and inertia, over the rows of every rank (assign < 0: left out);
// collective and exact (the same bits for any split of the rows).
struct ClusterMoments {
  at::Tensor means, sizes, scatter;
  double inertia = 0;
};
ClusterMoments cluster_moments(const at::Tensor& x, const at::Tensor& assign, int64_t K, comm::Communicator& comm);
// Collective Davies-Bouldin index of the rows of every rank.
double davies_bouldin(const at::Tensor& x, const at::Tensor& assign, int64_t K, comm::Communicator& comm);

struct QualityOptions {
  int64_t silhouette_sample = 2000;  ///< expected rows in the silhouette sample
  uint64_t seed = 0;                 ///< picks the sample
};

// Collective: every rank passes its own rows x [n_r, d], their global ids,
// clusters (assign < 0: outlier, left out and counted) and labels in [0, C).
// Returns the same JSON on every rank: k, rows, outliers, sizes, inertia,
// davies_bouldin, silhouette, silhouette_rows, purity, cluster_purity, nmi,
// ari, contingency.
nlohmann::json cluster_quality(const at::Tensor& x, const at::Tensor& ids, const at::Tensor& assign,
                               const at::Tensor& labels, int64_t K, int64_t C, comm::Communicator& comm,
                               const QualityOptions& options = {});

}  // namespace smoe::cluster
