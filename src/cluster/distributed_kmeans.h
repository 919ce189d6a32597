// K-means over rows spread among ranks (FAISS's distributed k-means and
// PyTorch's DistributedSampler are the models): each rank keeps its own rows
// and only [K, D] sums, [K] counts and a few scalars cross ranks.
//  - Seeding: k-means++ (greedy, as kmeans.h) on a sample of the rows chosen
//    by a hash of (seed, global id), gathered on every rank in id order:
//    the same seeds whatever the split. When the sample is the whole data,
//    this is kmeans.h's seeding exactly.
//  - Lloyd steps: every row is turned into 64-bit fixed point once (a scale
//    chosen from the global largest |x| and n, so that no sum can overflow),
//    and the M-step sums integers: the centroids, the iteration count and the
//    inertia are the same bit for bit on 1, 2 or P ranks and for any split of
//    the rows.
//  - An empty cluster takes the row farthest from its centroid over all
//    ranks (ties: the lowest id).
#pragma once

#include <ATen/core/Tensor.h>

#include "cluster/kmeans.h"
#include "comm/communicator.h"

namespace smoe::cluster {

struct DistributedKMeansOptions {
  KMeansOptions kmeans;
  int64_t seeding_sample = 65536;  ///< rows k-means++ seeds from (all rows when n is smaller)
};

// Collective. x: this rank's rows [n_r, d] (n_r may be 0); ids: their global
// ids [n_r], a partition of [0, n) over the ranks. Returns the centroids and
// the inertia (the same on every rank) and `assign` for this rank's rows.
KMeansResult kmeans(const at::Tensor& x, const at::Tensor& ids, const DistributedKMeansOptions& options,
                    comm::Communicator& comm);

// Collective: the sums [G, d] (double) and counts [G] (int64) of the rows of
// x [n_r, d] by group (groups [n_r] in [0, G)), over every rank, in fixed
// point: the same bits for any split of the rows.
std::pair<at::Tensor, at::Tensor> group_sums(const at::Tensor& x, const at::Tensor& groups, int64_t G,
                                             comm::Communicator& comm);

}  // namespace smoe::cluster
