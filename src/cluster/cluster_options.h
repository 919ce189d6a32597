// The cluster stage's section, cluster.*: which initial gate (the registry
// of cluster/initial_gate.h), what it clusters, K-means's options, and the
// options each initial gate declares in its registration, under its name
// (DFCP's: cluster.dfcp.*).
#pragma once

#include <cstdint>
#include <string>

#include "cluster/kmeans_options.h"
#include "core/options.h"
#include "core/variant_options.h"

namespace smoe {

struct ClusterConfig {
  std::string method = "kmeans";  // initial-gate strategy (cluster/initial_gate.h): kmeans | per_class | ...
  std::string features;  // a file of per-sample features to cluster instead of the embeddings ("" = embeddings)
  cluster::KMeansOptions kmeans;                     // restarts, max_iter, tol (k and seed are set by the stage)
  bool normalize = true;                             // L2-normalise embeddings before clustering
  int64_t silhouette_sample = 2000;                  // rows the cluster-quality report's silhouette is computed on
  options::VariantSections methods{"initial gate"};  // cluster.<method>.*: each initial gate's own options

  void describe(options::Table& t) {
    t.key("method", method,
          "initial gate: kmeans (per-sample K-means), per_class (clustering of class-mean embeddings) or dfcp "
          "(DFCP-MoE's double-stage clustering)");
    t.key("features", features,
          "per-sample features to cluster (and pseudo-label) instead of the base model's embeddings: an HDF5 file "
          "with a float dataset /features [N, D] read by rows, or a torch file (.pt: a tensor [N, D] or a dict with "
          "'features', read whole), row i for training sample i; empty: the base model's embeddings");
    t.inline_section(kmeans);
    t.key("normalize", normalize, "L2-normalise embeddings before clustering");
    t.key("silhouette_sample", silhouette_sample,
          "training rows (chosen by a hash of their id) the cluster-quality report computes the silhouette on")
        .at_least(2);
    methods.describe(t);
  }
};

}  // namespace smoe
