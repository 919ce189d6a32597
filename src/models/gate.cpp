#include "models/gate.h"

#include <torch/torch.h>

#include "models/cnn_gate.h"

namespace smoe::models {

namespace {

at::Tensor rows_of(const at::Tensor& t, const at::Tensor& ids) {
  return t.defined() ? t.index_select(0, ids.to(t.device())) : t;
}
at::Tensor moved(const at::Tensor& t, const c10::Device& device) { return t.defined() ? t.to(device) : t; }

}  // namespace

GateFeatures GateFeatures::rows(const at::Tensor& ids) const {
  return {rows_of(embedding, ids), rows_of(base_logits, ids), rows_of(inputs, ids), rows_of(expert_hidden, ids),
          rows_of(noise, ids)};
}

GateFeatures GateFeatures::to(const c10::Device& device) const {
  return {moved(embedding, device), moved(base_logits, device), moved(inputs, device), moved(expert_hidden, device),
          moved(noise, device)};
}

int64_t GateModule::init_from(const GateModule& other) {
  torch::NoGradGuard no_grad;
  int64_t copied = 0;
  const auto theirs = other.named_parameters(true);
  for (auto& p : named_parameters(true)) {
    const at::Tensor* t = theirs.find(p.key());
    if (t && t->sizes() == p.value().sizes()) {
      p.value().copy_(*t);
      ++copied;
    }
  }
  return copied;
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
        [](const GateSpec& s) -> Gate { return std::make_shared<ClassRoutingGateImpl>(s.classes, s.experts); }},
       {"cnn", [](const GateSpec& s) -> Gate { return std::make_shared<CnnGateImpl>(s); }},
       {"attentive", [](const GateSpec& s) -> Gate { return std::make_shared<AttentiveGateImpl>(s); }},
       {"noisy", [](const GateSpec& s) -> Gate { return std::make_shared<NoisyGateImpl>(s); }},
       {"tempered", [](const GateSpec& s) -> Gate { return std::make_shared<TemperedGateImpl>(s); }}},
      {"distill.gate_kind"});
  return registry;
}

namespace {
[[maybe_unused]] const bool loads = options::add_variant_loader([] { gate_kinds(); });
}  // namespace

}  // namespace smoe::models
