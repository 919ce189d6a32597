// K-means (Lloyd, MacQueen 1967) with greedy k-means++ seeding (Arthur &
// Vassilvitskii 2007, with 2 + ln k local trials per centre as scikit-learn
// does), several restarts keeping the lowest inertia. Distances are computed
// by matrix products (|x|^2 - 2 x.c + |c|^2) in libtorch, in blocks of rows,
// so the same code runs on CPU (BLAS) or GPU. There is one Lloyd loop, the
// distributed one (distributed_kmeans.h): kmeans() below runs it on one
// process holding every row; this header holds the pieces it is made of.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "cluster/kmeans_options.h"

namespace smoe::cluster {

struct KMeansStats {
  double inertia = 0;
  int64_t iterations = 0;
};

struct KMeansResult {
  at::Tensor centroids;  ///< float [k, d]
  at::Tensor assign;     ///< int64 [n], index of the nearest centroid
  double inertia = 0;    ///< sum of squared distances to the nearest centroid
  int64_t best_restart = 0;
  std::vector<KMeansStats> restarts;  ///< per restart
};

// x: float [n, d] with n >= k, all on this process (no ranks): the
// distributed K-means on a group of one, seeded from every row; the same
// result as the rows spread over any number of ranks with a seeding sample
// of at least n.
KMeansResult kmeans(const at::Tensor& x, const KMeansOptions& options);

// Squared Euclidean distances [n, k] between rows of x [n, d] and c [k, d].
at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& c);
// Same, with the rows' squared norms x_sq [n] already computed.
at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& x_sq, const at::Tensor& c);

// Nearest centroid of each row of x and its squared distance ([n] int64,
// [n] float), in blocks of `block_rows` rows; x_sq [n] are the rows' squared norms.
std::pair<at::Tensor, at::Tensor> nearest_centroids(const at::Tensor& x, const at::Tensor& x_sq, const at::Tensor& c,
                                                    int64_t block_rows);

// k-means++ seeding alone (greedy, as in scikit-learn): k rows of x.
at::Tensor kmeans_plus_plus(const at::Tensor& x, int64_t k, uint64_t seed);

}  // namespace smoe::cluster
