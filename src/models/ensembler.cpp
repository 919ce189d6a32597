#include "models/ensembler.h"

#include <torch/torch.h>

namespace smoe::models {

StackingImpl::StackingImpl(int64_t classes) {
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

namespace {

class Bagging : public Ensembler {
 public:
  at::Tensor probs(const at::Tensor& base_logits, const at::Tensor& expert_logits, EnsemblerModule*) const override {
    return bagging_probs(base_logits, expert_logits);
  }
  double macs(int64_t) const override { return 0.0; }
};

class Stacking : public Ensembler {
 public:
  EnsemblerNet build(int64_t classes) const override { return std::make_shared<StackingImpl>(classes); }
  at::Tensor probs(const at::Tensor& base_logits, const at::Tensor& expert_logits,
                   EnsemblerModule* net) const override {
    SMOE_ASSERT(net, "stacking needs its trained d_k");
    return torch::softmax(net->forward(base_logits, expert_logits), 1);
  }
  double macs(int64_t classes) const override { return static_cast<double>(2 * classes * classes); }
};

}  // namespace

Registry<EnsemblerFactory>& ensemblers() {
  static Registry<EnsemblerFactory> registry(
      "ensembler", "ensembler.kind",
      {{"bagging", std::shared_ptr<const Ensembler>(std::make_shared<Bagging>())},
       {"stacking", std::shared_ptr<const Ensembler>(std::make_shared<Stacking>())}});
  return registry;
}

namespace {
[[maybe_unused]] const bool loads = options::add_variant_loader([] { ensemblers(); });
}  // namespace

}  // namespace smoe::models
