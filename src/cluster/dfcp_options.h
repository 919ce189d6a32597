// DFCP-MoE's double-stage clustering's options (cluster/dfcp.h, docs/dfcp.md)
// and their keys, cluster.dfcp.*.
#pragma once

#include <cstdint>
#include <vector>

#include "core/options.h"

namespace smoe::cluster {

struct DfcpOptions {
  int64_t k_max = 0;       ///< stage 1: K from experts to k_max (0: 2 x experts)
  int64_t neighbours = 3;  ///< stage 2: nearest clusters that vote for a reference
  std::vector<double> thetas{0.5, 0.75, 1, 1.25, 1.5,
                             2,   2.5,  3, 4,    5};  ///< stage 2: thresholds / the references' mean radius
  double min_coverage = 0.9;                          ///< stage 2: share of rows a threshold must keep

  void describe(options::Table& t) {
    t.key("k_max", k_max,
          "dfcp stage 1: K-means for every K from experts.count to k_max, the lowest Davies-Bouldin index wins (0: 2 "
          "x experts.count)")
        .at_least(0);
    t.key("neighbours", neighbours,
          "dfcp stage 2: clusters are ranked by how many others count them among their this-many nearest clusters; "
          "the experts.count best become the reference clusters")
        .at_least(1);
    t.key("thetas", thetas,
          "dfcp stage 2: distance thresholds swept, in units of the reference clusters' mean radius; a row joins its "
          "nearest reference centroid when closer than the threshold, else it is an outlier");
    t.key("min_coverage", min_coverage,
          "dfcp stage 2: the threshold with the lowest Davies-Bouldin index among those keeping at least this share "
          "of the rows wins")
        .at_least(0)
        .at_most(1);
  }
};

}  // namespace smoe::cluster
