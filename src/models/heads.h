// The small heads of the MoE: the gate (a linear layer on the base model's
// pre-logits, Royer et al. Section 2.2) and the stacking ensembler d_k (a
// linear layer on the concatenated base and expert logits). Bagging needs no
// module: it averages the two probability vectors.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace smoe::models {

class GateImpl : public torch::nn::Module {
 public:
  GateImpl(int64_t prelogit_dim, int64_t experts);
  // Logits over experts [B, K]; g(k|x) is their softmax.
  at::Tensor forward(const at::Tensor& prelogits) { return linear->forward(prelogits); }
  int64_t macs() const { return in_ * out_; }
  torch::nn::Linear linear{nullptr};

 private:
  int64_t in_, out_;
};
TORCH_MODULE(Gate);

class StackingImpl : public torch::nn::Module {
 public:
  // Starts as the average of the two logit vectors.
  explicit StackingImpl(int64_t classes);
  // Logits [B, C] from base and expert logits [B, C] each.
  at::Tensor forward(const at::Tensor& base_logits, const at::Tensor& expert_logits);
  int64_t macs() const { return 2 * classes_ * classes_; }
  torch::nn::Linear linear{nullptr};

 private:
  int64_t classes_;
};
TORCH_MODULE(Stacking);

// Bagging: (softmax(base) + softmax(expert)) / 2, as probabilities [B, C].
at::Tensor bagging_probs(const at::Tensor& base_logits, const at::Tensor& expert_logits);

}  // namespace smoe::models
