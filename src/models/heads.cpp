#include "models/heads.h"

#include <torch/torch.h>

namespace smoe::models {

GateImpl::GateImpl(int64_t prelogit_dim, int64_t experts) : in_(prelogit_dim), out_(experts) {
  linear = register_module("linear", torch::nn::Linear(prelogit_dim, experts));
}

StackingImpl::StackingImpl(int64_t classes) : classes_(classes) {
  linear = register_module("linear", torch::nn::Linear(2 * classes, classes));
  torch::NoGradGuard no_grad;
  at::Tensor eye = torch::eye(classes) * 0.5;
  linear->weight.copy_(torch::cat({eye, eye}, 1));
  linear->bias.zero_();
}

at::Tensor StackingImpl::forward(const at::Tensor& base_logits, const at::Tensor& expert_logits) {
  return linear->forward(torch::cat({base_logits, expert_logits}, 1));
}

at::Tensor bagging_probs(const at::Tensor& base_logits, const at::Tensor& expert_logits) {
  return 0.5 * (torch::softmax(base_logits, 1) + torch::softmax(expert_logits, 1));
}

}  // namespace smoe::models
