// The initial gate g0 (Algorithm 1, step 2): from K-means centroids of the
// base model's pre-logit embeddings, g0(k|x) = softmax_k(-|x - c_k|^2 / T)
// (or one-hot on the nearest centroid); and the per-class variant of Royer et
// al. Table 5, which clusters class-mean embeddings and routes a sample by its
// class.
#pragma once

#include <ATen/core/Tensor.h>

#include "cluster/kmeans.h"
#include "comm/communicator.h"

namespace smoe::cluster {

// Squared distances [n, K] of rows x [n, d] to centroids c [K, d], by
// differences row by row (not kmeans.h's blocked matrix product): a row's
// distances are the same bits whichever rows share the call, so results do
// not depend on how rows are split among ranks.
at::Tensor rowwise_squared_distances(const at::Tensor& x, const at::Tensor& c);

// g0 [n, K] from embeddings [n, d] and centroids [K, d]; rows sum to 1.
at::Tensor soft_assignment(const at::Tensor& embeddings, const at::Tensor& centroids, double temperature, bool hard);

struct PerClassClustering {
  at::Tensor class_to_expert;  ///< int64 [C]: the expert (cluster) of each class
  at::Tensor centroids;        ///< float [K, d]: centroids of the class means
};

// K-means on the C class-mean embeddings (K <= C). With `comm`, collective:
// each rank passes its own rows and the class sums are exact over the ranks.
PerClassClustering cluster_classes(const at::Tensor& embeddings, const at::Tensor& labels, int64_t num_classes,
                                   const KMeansOptions& options, comm::Communicator* comm = nullptr);

// One-hot g0 [n, K] routing each sample to its class's expert.
at::Tensor class_assignment(const at::Tensor& labels, const at::Tensor& class_to_expert, int64_t experts);

// At inference the per-class model routes by the base model's class
// probabilities: models::ClassRoutingGateImpl.

}  // namespace smoe::cluster
