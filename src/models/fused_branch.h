// K branch experts trained as one network (experts.fuse; issue #14): every
// convolution and BatchNorm of the K experts stacked along the channels as
// one grouped operation (expert k on channels [k*C, (k+1)*C) of every
// activation), and the K classifiers as one batched matrix product, so each
// kernel call does K experts' work on one read of the trunk's features —
// what grouped-GEMM MoE kernels do for transformer experts.
//
// Expert k's channels never mix with another's: forward() computes what the K
// experts compute one by one (up to float summation order inside the
// kernels), BatchNorm's per-channel statistics are each expert's own, and an
// element-wise optimiser step (SGD, Adam) on the stacked parameters is the K
// experts' own steps. Parameter and buffer names are the experts' ("block3.0.
// conv1.weight"), so stacking and unstacking go by name.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <vector>

namespace smoe::models {

class BackboneImpl;
class BlockImpl;

class FusedBranchImpl : public torch::nn::Module {
 public:
  // The stacked weights of `experts` (branch experts of one spec and branch
  // point; they are not changed).
  explicit FusedBranchImpl(const std::vector<std::shared_ptr<BackboneImpl>>& experts);
  // Logits [B, K, classes] of the K experts on the same trunk features [B, C, H, W].
  at::Tensor forward(const at::Tensor& x);
  // Copies the stacked weights and BatchNorm statistics back into `experts`
  // (the ones it was built from, or experts of the same spec).
  void unstack_into(const std::vector<std::shared_ptr<BackboneImpl>>& experts);
  int64_t count() const { return k_; }

 private:
  int64_t k_ = 0;
  std::vector<std::shared_ptr<BlockImpl>> blocks_;
  at::Tensor fc_weight_, fc_bias_;  // [K, classes, D], [K, classes]
};
TORCH_MODULE(FusedBranch);

}  // namespace smoe::models
