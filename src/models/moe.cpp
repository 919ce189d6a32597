#include "models/moe.h"

#include <torch/torch.h>

#include "core/error.h"

namespace smoe::models {

at::Tensor normalize_rows(const at::Tensor& x) { return x / x.norm(2, 1, true).clamp_min(1e-12); }

MoeModel::MoeModel(Backbone base, int64_t branch_after, bool normalize_embedding, Gate gate, int64_t experts)
    : base_(std::move(base)),
      branch_after_(branch_after),
      normalize_(normalize_embedding),
      gate_(std::move(gate)),
      experts_(static_cast<size_t>(experts)),
      nets_(static_cast<size_t>(experts)) {
  for (const auto& name : ensemblers().names()) rules_[name] = ensemblers().get(name)();
}

void MoeModel::set_expert(int64_t k, Expert expert, std::map<std::string, EnsemblerNet> nets) {
  SMOE_ASSERT(k >= 0 && k < num_experts(), "expert {} of {}", k, num_experts());
  expert->eval();
  experts_[static_cast<size_t>(k)] = std::move(expert);
  nets_[static_cast<size_t>(k)] = std::move(nets);
}

GateFeatures MoeModel::gate_features(const at::Tensor& prelogits, const at::Tensor& base_logits) const {
  return {normalize_ ? normalize_rows(prelogits) : prelogits, base_logits};
}

MoeOutputs MoeModel::forward(const at::Tensor& images) {
  torch::NoGradGuard no_grad;
  base_->eval();
  at::Tensor trunk = base_->blocks(images, 0, branch_after_);
  at::Tensor pre = base_->prelogits(base_->blocks(trunk, branch_after_, NetworkSpec::kBlocks));
  MoeOutputs out;
  out.base_logits = base_->classify(pre);
  out.gate_probs = gate_->probabilities(gate_features(pre, out.base_logits));
  std::vector<at::Tensor> logits;
  std::map<std::string, std::vector<at::Tensor>> ensembled;
  for (int64_t k = 0; k < num_experts(); ++k) {
    SMOE_ASSERT(has_expert(k), "MoE forward without expert {}", k);
    logits.push_back(experts_[static_cast<size_t>(k)]->forward(trunk));
    for (const auto& [name, rule] : rules_)
      ensembled[name].push_back(ensembled_probs(k, name, out.base_logits, logits.back()));
  }
  out.expert_logits = torch::stack(logits, 1);
  for (auto& [name, parts] : ensembled) out.ensembled[name] = torch::stack(parts, 1);
  return out;
}

at::Tensor MoeModel::predict(const at::Tensor& images, Predict rule, const std::string& ensembler, double tau) {
  return predict_routed(images, rule, ensembler, torch::tensor(tau, torch::kDouble)).probs;
}

Prediction MoeModel::predict_routed(const at::Tensor& images, Predict rule, const std::string& ensembler,
                                    const at::Tensor& tau, bool traceable) {
  torch::NoGradGuard no_grad;
  base_->eval();
  at::Tensor trunk = base_->blocks(images, 0, branch_after_);
  at::Tensor pre = base_->prelogits(base_->blocks(trunk, branch_after_, NetworkSpec::kBlocks));
  at::Tensor base_logits = base_->classify(pre);
  at::Tensor base_probs = torch::softmax(base_logits, 1);
  const int64_t K = num_experts();
  // Shapes follow from tensors, never from sizes read here: a trace would
  // keep those as constants.
  const at::Tensor per_sample = base_probs.select(1, 0);
  if (rule == Predict::base)
    return {base_probs, torch::zeros_like(base_probs.narrow(1, 0, 1)).expand({-1, K}).contiguous(),
            torch::ones_like(per_sample, per_sample.options().dtype(torch::kBool))};
  at::Tensor gate = gate_->probabilities(gate_features(pre, base_logits));
  // Weight of each (sample, expert) pair, zero where the expert does not run.
  at::Tensor weight, active;
  if (rule == Predict::top1) {
    weight = torch::one_hot(gate.argmax(1), K).to(gate.dtype());
  } else if (rule == Predict::top2) {
    const auto top = gate.topk(std::min<int64_t>(2, K), 1);
    weight = torch::zeros_like(gate).scatter(1, std::get<1>(top), std::get<0>(top));
  } else {
    active = gate * (1.0 - std::get<0>(base_probs.max(1))).unsqueeze(1) >= tau;
    weight = gate * active.to(gate.dtype());
  }
  at::Tensor out = torch::zeros_like(base_probs);
  for (int64_t k = 0; k < K; ++k) {
    SMOE_ASSERT(has_expert(k), "MoE prediction without expert {}", k);
    // Only the samples routed to expert k run it.
    at::Tensor rows = weight.select(1, k).nonzero().reshape(-1);
    if (!traceable && rows.numel() == 0) continue;
    at::Tensor logits = experts_[static_cast<size_t>(k)]->forward(trunk.index_select(0, rows));
    at::Tensor probs = rule == Predict::top2 || ensembler == kNoEnsembler
                           ? torch::softmax(logits, 1)
                           : ensembled_probs(k, ensembler, base_logits.index_select(0, rows), logits);
    out.index_add_(0, rows, weight.select(1, k).index_select(0, rows).unsqueeze(1) * probs);
  }
  if (rule != Predict::anytime)
    return {out, weight, torch::zeros_like(per_sample, per_sample.options().dtype(torch::kBool))};
  // Early exit: no expert is active (eval/anytime.h), whatever their weights.
  at::Tensor early = active.logical_not().all(1);
  return {torch::where(early.unsqueeze(1), base_probs, out), weight, early};
}

at::Tensor MoeModel::ensembled_probs(int64_t k, const std::string& name, const at::Tensor& base_logits,
                                     const at::Tensor& expert_logits) {
  auto r = rules_.find(name);
  SMOE_CHECK(r != rules_.end(), "ensembler '{}' is not one of this model's rules", name);
  const auto& rule = r->second;
  const auto& nets = nets_.at(static_cast<size_t>(k));
  auto it = nets.find(name);
  return rule->probs(base_logits, expert_logits, it == nets.end() ? nullptr : it->second.get());
}

double MoeModel::base_macs() const {
  return static_cast<double>(base_->macs(0, NetworkSpec::kBlocks) + base_->head_macs());
}

double MoeModel::expert_macs(int64_t k) const {
  SMOE_ASSERT(experts_.at(static_cast<size_t>(k)), "MACs of expert {}, not loaded", k);
  return static_cast<double>(experts_[static_cast<size_t>(k)]->forward_macs());
}

double MoeModel::ensembler_macs(const std::string& name) const {
  auto r = rules_.find(name);
  SMOE_CHECK(r != rules_.end(), "ensembler '{}' is not one of this model's rules", name);
  return r->second->macs(base_->spec().num_classes);
}

}  // namespace smoe::models
