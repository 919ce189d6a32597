// K-means's options (cluster/kmeans.h), and the configuration keys that set
// them: cluster.restarts, cluster.max_iter, cluster.tol (k is experts.count,
// the seed follows from the run's seed).
#pragma once

#include <cstdint>

#include "core/options.h"

namespace smoe::cluster {

struct KMeansOptions {
  int64_t k = 4;              ///< number of clusters
  int64_t restarts = 4;       ///< independent seedings; the lowest inertia wins
  int64_t max_iter = 100;     ///< Lloyd iterations per restart
  double tol = 1e-4;          ///< stop when the squared centre shift < tol x mean feature variance
  uint64_t seed = 0;          ///< drives every random choice
  int64_t block_rows = 4096;  ///< rows per distance block: the block's distances stay in cache for the argmin

  void describe(options::Table& t) {
    t.key("restarts", restarts, "K-means restarts; the lowest inertia wins").at_least(1);
    t.key("max_iter", max_iter, "Lloyd iterations per restart").at_least(1);
    t.key("tol", tol, "stop when centroids move less than tol x mean feature variance").at_least(0);
  }
};

}  // namespace smoe::cluster
