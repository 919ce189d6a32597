#include "models/gate.h"

#include <torch/torch.h>

namespace smoe::models {

GateFeatures GateFeatures::rows(const at::Tensor& ids) const {
  return {embedding.index_select(0, ids.to(embedding.device())),
          base_logits.index_select(0, ids.to(base_logits.device()))};
}

GateFeatures GateFeatures::to(const c10::Device& device) const {
  return {embedding.to(device), base_logits.to(device)};
}

at::Tensor GateModule::probabilities(const GateFeatures& f) { return torch::softmax(forward(f), 1); }

LinearGateImpl::LinearGateImpl(int64_t embedding_dim, int64_t experts) : in_(embedding_dim), out_(experts) {
  linear = register_module("linear", torch::nn::Linear(embedding_dim, experts));
}

bool LinearGateImpl::init_from_centroids(const at::Tensor& centroids, double temperature) {
  torch::NoGradGuard no_grad;
  linear->weight.copy_(2.0 * centroids / temperature);
  linear->bias.copy_(-centroids.pow(2).sum(1) / temperature);
  return true;
}

ClassRoutingGateImpl::ClassRoutingGateImpl(int64_t classes, int64_t experts) : classes_(classes), experts_(experts) {
  class_to_expert = register_buffer("class_to_expert", torch::zeros({classes}, torch::kLong));
}

at::Tensor ClassRoutingGateImpl::probabilities(const GateFeatures& f) {
  at::Tensor m = torch::one_hot(class_to_expert, experts_).to(f.base_logits.scalar_type());  // [C, K]
  return torch::softmax(f.base_logits, 1).mm(m);
}

at::Tensor ClassRoutingGateImpl::forward(const GateFeatures& f) { return probabilities(f).clamp_min(1e-30).log(); }

Registry<GateFactory>& gate_kinds() {
  static Registry<GateFactory> registry(
      "gate kind", "gate.kind",
      {{"linear",
        [](const GateSpec& s) -> Gate { return std::make_shared<LinearGateImpl>(s.embedding_dim, s.experts); }},
       {"class_routing",
        [](const GateSpec& s) -> Gate { return std::make_shared<ClassRoutingGateImpl>(s.classes, s.experts); }}});
  return registry;
}

}  // namespace smoe::models
