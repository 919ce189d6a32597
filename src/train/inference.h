// Batched forward passes over sets of samples, in fixed batches of
// consecutive ids so that every sample's output is the same whichever rank
// computes it (the basis of rank-count invariance for embeddings, trunk
// features and evaluation).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "data/dataset.h"
#include "models/network.h"

namespace smoe::train {

struct BaseOutputs {
  at::Tensor ids;        // int64 [n]
  at::Tensor prelogits;  // float [n, D]
  at::Tensor logits;     // float [n, C]
};

// The base model's pre-logits and logits of samples [0, n) of `ds`: the fixed
// batches of `batch` ids are shared round-robin among the ranks, and the
// results gathered on `root` in id order (other ranks get undefined tensors;
// with root = -1 every rank gets them).
BaseOutputs base_outputs(models::Backbone& base, const data::Dataset& ds, comm::Communicator& comm, int64_t batch,
                         int root);

// Output of the trunk (blocks [0, branch_after)) for every sample of `ds`,
// float [n, C', H', W'] (no augmentation), on every rank: the fixed batches
// are shared round-robin and the results allgathered. Collective.
at::Tensor trunk_features(models::Backbone& base, const data::Dataset& ds, int64_t branch_after, int64_t batch,
                          comm::Communicator& comm);

// Logits of an expert (or a whole network) over rows of `inputs` in batches (eval mode, no grad).
at::Tensor logits_of(models::ExpertModule& net, const at::Tensor& inputs, int64_t batch);

// Scatters rows gathered from ranks (`ids` [n] in any order) into id order.
at::Tensor reorder_by_id(const at::Tensor& rows, const at::Tensor& ids);

}  // namespace smoe::train
