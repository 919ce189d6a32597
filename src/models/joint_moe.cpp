#include "models/joint_moe.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <limits>

#include "core/error.h"

namespace smoe::models {

JointMoeImpl::JointMoeImpl(Gate gate, std::vector<Expert> experts, int64_t top_k, Trunk trunk)
    : top_k_(top_k), experts_(std::move(experts)) {
  if (trunk) trunk_ = register_module("trunk", std::move(trunk));
  SMOE_CHECK(!experts_.empty(), "a jointly trained MoE needs at least one expert");
  SMOE_CHECK(top_k_ >= 0 && top_k_ <= static_cast<int64_t>(experts_.size()),
             "config key 'joint.top_k' is {}: expected 0 (all) to experts.count ({})", top_k_, experts_.size());
  gate_ = register_module("gate", std::move(gate));
  SMOE_CHECK(gate_->reads_inputs(),
             "a jointly trained MoE needs a gate that reads the experts' input (attentive, cnn, noisy, tempered)");
  for (size_t e = 0; e < experts_.size(); ++e) register_module(fmt::format("expert{:03d}", e), experts_[e]);
}

void JointMoeImpl::set_gate(Gate gate) {
  SMOE_CHECK(gate->reads_inputs(),
             "a jointly trained MoE needs a gate that reads the experts' input (attentive, cnn, noisy, tempered)");
  gate_ = replace_module("gate", std::move(gate));
}

std::vector<at::Tensor> JointMoeImpl::expert_parameters() const {
  std::vector<at::Tensor> out;
  if (trunk_ && !trunk_frozen_)
    for (auto& p : trunk_->parameters()) out.push_back(p);
  for (const auto& e : experts_)
    for (auto& p : e->parameters()) out.push_back(p);
  return out;
}

void JointMoeImpl::freeze_trunk() {
  if (!trunk_) return;
  trunk_frozen_ = true;
  for (auto& p : trunk_->parameters()) p.set_requires_grad(false);
  trunk_->eval();
}

void JointMoeImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (trunk_ && trunk_frozen_) trunk_->eval();
}

void JointMoeImpl::route(JointOutputs& o) const {
  if (top_k_ == 0) {
    o.gate_probs = torch::softmax(o.gate_logits, 1);
    o.routed = torch::ones_like(o.gate_logits, torch::kBool);
    return;
  }
  at::Tensor top = std::get<1>(o.gate_logits.topk(top_k_, 1));  // [B, k]
  // (A float scatter: libtorch 1.13's tracer has no scatter_ with a bool value, models/moe_export.h.)
  o.routed = torch::zeros_like(o.gate_logits).scatter_(1, top, 1.0).to(torch::kBool);
  at::Tensor masked = o.gate_logits.masked_fill(o.routed.logical_not(), -std::numeric_limits<double>::infinity());
  o.gate_probs = torch::softmax(masked, 1);
}

JointOutputs JointMoeImpl::run(const at::Tensor& images, const at::Tensor& noise, bool experts_grad, bool dense) {
  const int64_t B = images.size(0), K = num_experts();
  const bool hidden = gate_->needs_expert_hidden();
  JointOutputs o;
  // The trunk and the experts run without autograd when they are frozen
  // (experts_grad false); the gate always with the caller's mode.
  const bool experts_mode = experts_grad && c10::GradMode::is_enabled();
  GateFeatures f;
  f.noise = noise;
  std::vector<at::Tensor> logits(static_cast<size_t>(K)), hiddens;
  at::Tensor x;
  {
    c10::AutoGradMode mode(experts_mode);
    // What the gate and the experts read: the shared trunk's features
    // (frozen with the experts), or the images.
    x = trunk_ ? trunk_->forward(images) : images;
    if (hidden) {  // the attentive gate needs every expert on every sample first
      for (int64_t e = 0; e < K; ++e) {
        HiddenAndLogits out = experts_[static_cast<size_t>(e)]->forward_hidden(x);
        hiddens.push_back(out.hidden);
        logits[static_cast<size_t>(e)] = out.logits;
      }
      f.expert_hidden = torch::stack(hiddens, 1);  // [B, K, H]
    }
  }
  f.inputs = x;
  o.gate_logits = gate_->forward(f);
  route(o);
  if (!hidden) {
    c10::AutoGradMode mode(experts_mode);
    for (int64_t e = 0; e < K; ++e) {
      Expert& ex = experts_[static_cast<size_t>(e)];
      if (top_k_ == 0 || dense) {
        logits[static_cast<size_t>(e)] = ex->forward(x);
        continue;
      }
      // Sparse dispatch: the expert sees only the samples routed to it.
      at::Tensor rows = o.routed.select(1, e).nonzero().squeeze(1);
      if (rows.numel() == 0) continue;
      at::Tensor out = ex->forward(x.index_select(0, rows));
      logits[static_cast<size_t>(e)] = torch::zeros({B, out.size(1)}, out.options()).index_copy(0, rows, out);
    }
  }
  int64_t C = 0;
  for (const auto& l : logits)
    if (l.defined()) C = l.size(1);
  for (auto& l : logits)
    if (!l.defined()) l = torch::zeros({B, C}, x.options());
  o.expert_logits = torch::stack(logits, 1);  // [B, K, C]
  // Unrouted experts have g = 0: their (zero) logits add nothing.
  o.mixture = (o.gate_probs.unsqueeze(2) * torch::softmax(o.expert_logits, 2)).sum(1);
  return o;
}

JointOutputs JointMoeImpl::forward(const at::Tensor& x, const at::Tensor& noise) { return run(x, noise, true, false); }
JointOutputs JointMoeImpl::forward_frozen_experts(const at::Tensor& x, const at::Tensor& noise) {
  return run(x, noise, false, false);
}
JointOutputs JointMoeImpl::forward_dense(const at::Tensor& x) { return run(x, {}, true, true); }

Prediction JointMoeImpl::predict(const at::Tensor& x, Rule rule) {
  torch::NoGradGuard no_grad;
  const JointOutputs r = forward_dense(x);
  const at::Tensor& g = r.gate_probs;
  Prediction p;
  p.early = torch::zeros_like(g.select(1, 0), g.options().dtype(torch::kBool));
  if (rule == Rule::mixture) {
    p.probs = r.mixture;
    p.weight = g;
    return p;
  }
  const auto top = g.topk(rule == Rule::top1 ? 1 : std::min<int64_t>(2, num_experts()), 1);
  at::Tensor w = rule == Rule::top1 ? torch::ones_like(std::get<0>(top)) : std::get<0>(top);
  p.weight = torch::zeros_like(g).scatter(1, std::get<1>(top), w / w.sum(1, true));
  p.probs = (p.weight.unsqueeze(2) * torch::softmax(r.expert_logits, 2)).sum(1);
  return p;
}

at::Tensor mixture_nll(const at::Tensor& mixture, const at::Tensor& labels, double smoothing) {
  at::Tensor logp = (mixture + 1e-7).log();
  at::Tensor nll = -logp.gather(1, labels.unsqueeze(1)).squeeze(1);
  if (smoothing <= 0) return nll;
  return (1 - smoothing) * nll - smoothing * logp.mean(1);
}

}  // namespace smoe::models
