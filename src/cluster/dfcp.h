// DFCP-MoE's double-stage clustering (docs/dfcp.md has the decisions the
// paper's text leaves open):
//  1. Stage 1: K-means for every K1 from K (the number of experts) to k_max;
//     the K1 with the lowest Davies-Bouldin index wins (ties: the smaller K1).
//  2. Stage 2: each stage-1 cluster names its `neighbours` nearest clusters
//     (centroid distance); the clusters named most often (the paper's
//     "clusters with three or more nearest neighbours"; ties by size, then
//     index) are the K reference clusters. A row joins its nearest reference
//     centroid when its distance is under theta x r, r the references' mean
//     radius (mean distance of their rows to their centroid); otherwise it
//     is an outlier (assign -1). theta is swept: the lowest DBI among the
//     thresholds that keep at least min_coverage of the rows wins (without
//     that floor a tiny theta always wins), or the largest theta when none
//     does. The final centroids are the means of each reference's rows.
// Collective over the ranks' rows, like distributed_kmeans.h: the same
// clusters, bit for bit, on any number of ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>

#include "cluster/dfcp_options.h"
#include "cluster/initial_gate.h"

namespace smoe::cluster {

// The K reference clusters (int64 [K], ascending) among the clusters of
// `centroids` [K1, d] with `sizes` [K1], and each cluster's votes (int64 [K1]).
std::pair<at::Tensor, at::Tensor> reference_clusters(const at::Tensor& centroids, const at::Tensor& sizes, int64_t K,
                                                     int64_t neighbours);

// Each row's nearest reference centroid (int64 [n]), or -1 when its distance
// is not under `threshold`; distances by differences row by row, so a row's
// result does not depend on the rows beside it.
at::Tensor assign_to_references(const at::Tensor& x, const at::Tensor& references, double threshold);

struct DfcpResult {
  at::Tensor centroids;   ///< float [K, d]: means of the final clusters
  at::Tensor assign;      ///< int64 [n_r]: this rank's rows' clusters, -1 for outliers
  nlohmann::json record;  ///< stage-1 and stage-2 sweeps, the choices, coverage
};

// Collective: x [n_r, d] this rank's rows, ids their global ids.
DfcpResult dfcp_cluster(const at::Tensor& x, const at::Tensor& ids, const KMeansOptions& kmeans,
                        const DfcpOptions& options, comm::Communicator& comm);

}  // namespace smoe::cluster
