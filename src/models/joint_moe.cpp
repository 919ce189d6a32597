#include "models/joint_moe.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/error.h"

namespace smoe::models {

JointMoeImpl::JointMoeImpl(Gate gate, std::vector<Expert> experts) : experts_(std::move(experts)) {
  SMOE_CHECK(!experts_.empty(), "a jointly trained MoE needs at least one expert");
  gate_ = register_module("gate", std::move(gate));
  SMOE_CHECK(gate_->reads_inputs(), "a jointly trained MoE needs a gate that reads the experts' input (cnn, attentive)");
  for (size_t e = 0; e < experts_.size(); ++e) register_module(fmt::format("expert{:03d}", e), experts_[e]);
}

void JointMoeImpl::set_gate(Gate gate) {
  SMOE_CHECK(gate->reads_inputs(), "a jointly trained MoE needs a gate that reads the experts' input (cnn, attentive)");
  gate_ = replace_module("gate", std::move(gate));
}

std::vector<at::Tensor> JointMoeImpl::expert_parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& e : experts_)
    for (auto& p : e->parameters()) out.push_back(p);
  return out;
}

JointOutputs JointMoeImpl::run(const at::Tensor& x, bool experts_grad) {
  const bool hidden = gate_->needs_expert_hidden();
  std::vector<at::Tensor> logits, hiddens;
  {
    c10::optional<torch::NoGradGuard> no_grad;
    if (!experts_grad) no_grad.emplace();
    for (auto& e : experts_) {
      if (hidden) {
        HiddenAndLogits out = e->forward_hidden(x);
        hiddens.push_back(out.hidden);
        logits.push_back(out.logits);
      } else {
        logits.push_back(e->forward(x));
      }
    }
  }
  JointOutputs o;
  o.expert_logits = torch::stack(logits, 1);  // [B, K, C]
  GateFeatures f;
  f.inputs = x;
  if (hidden) f.expert_hidden = torch::stack(hiddens, 1);  // [B, K, H]
  o.gate_logits = gate_->forward(f);
  o.gate_probs = torch::softmax(o.gate_logits, 1);
  o.mixture = (o.gate_probs.unsqueeze(2) * torch::softmax(o.expert_logits, 2)).sum(1);
  return o;
}

JointOutputs JointMoeImpl::forward(const at::Tensor& x) { return run(x, true); }
JointOutputs JointMoeImpl::forward_frozen_experts(const at::Tensor& x) { return run(x, false); }

at::Tensor mixture_nll(const at::Tensor& mixture, const at::Tensor& labels) {
  return -(mixture.gather(1, labels.unsqueeze(1)).squeeze(1) + 1e-7).log();
}

}  // namespace smoe::models
