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
  // This rank's own rows (its batches), on every rank.
  at::Tensor local_ids, local_prelogits;
};

// The base model's pre-logits and logits of samples [0, n) of `ds`: the fixed
// batches of `batch` ids are shared round-robin among the ranks, and the
// results gathered on `root` in id order (other ranks get undefined tensors;
// with root = -1 every rank gets them).
BaseOutputs base_outputs(models::Backbone& base, const data::Dataset& ds, comm::Communicator& comm, int64_t batch,
                         int root);

// Scatters rows gathered from ranks (`ids` [n] in any order) into id order.
at::Tensor reorder_by_id(const at::Tensor& rows, const at::Tensor& ids);

}  // namespace smoe::train
