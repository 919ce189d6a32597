// The single-gate MoE as one model (Royer et al. Section 2): the base model
// phi (its trunk, blocks [0, branch_after), shared and frozen), the gate g on
// phi's outputs, K experts on the trunk's features and, per expert, the
// trained ensemblers d_k. Its forward pass is the one the evaluation, the EM
// E-step and any later training scheme use; nothing else reimplements it.
//
// A rank may hold only some experts (the E-step evaluates those it owns);
// forward() needs all of them.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "models/ensembler.h"
#include "models/expert.h"
#include "models/gate.h"
#include "models/network.h"
#include "models/prediction.h"

namespace smoe::models {

struct MoeOutputs {
  at::Tensor base_logits;                       // [B, C]
  at::Tensor gate_probs;                        // [B, K] g(k|x)
  at::Tensor expert_logits;                     // [B, K, C]
  std::map<std::string, at::Tensor> ensembled;  // ensembler name -> e'_k(.|x) [B, K, C]
};

// L2-normalised rows (clamped away from zero norms).
at::Tensor normalize_rows(const at::Tensor& x);

class MoeModel {
 public:
  // normalize_embedding: the gate sees L2-normalised pre-logits (cluster.normalize).
  MoeModel(Backbone base, int64_t branch_after, bool normalize_embedding, Gate gate, int64_t experts);

  // Expert k with its trained ensemblers (by ensembler name; bagging needs none).
  void set_expert(int64_t k, Expert expert, std::map<std::string, EnsemblerNet> nets);
  // The ensembler rules, made with the run's options (a new model has every
  // registered rule with its defaults).
  void set_rules(EnsemblerRules rules) { rules_ = std::move(rules); }
  bool has_expert(int64_t k) const { return experts_.at(static_cast<size_t>(k)) != nullptr; }
  int64_t num_experts() const { return static_cast<int64_t>(experts_.size()); }
  Backbone& base() { return base_; }
  GateModule& gate() { return *gate_; }
  ExpertModule& expert(int64_t k) { return *experts_.at(static_cast<size_t>(k)); }
  // Expert k's trained ensemblers, by name.
  const std::map<std::string, EnsemblerNet>& ensembler_nets(int64_t k) const {
    return nets_.at(static_cast<size_t>(k));
  }

  // What the gate sees of base outputs: pre-logits [B, D] and logits [B, C].
  GateFeatures gate_features(const at::Tensor& prelogits, const at::Tensor& base_logits) const;
  // The base model's logits and every expert's and ensembler's outputs for
  // images [B, C, H, W] (no grad, eval mode).
  MoeOutputs forward(const at::Tensor& images);
  // The class probabilities [B, C] of one inference rule, computing only
  // what the rule needs (the path whose time per sample the report measures,
  // and the one smoe export traces): the base model alone (Predict::base);
  // the top-1 MoE, each sample through the gate's argmax expert and
  // ensembler `ensembler` (Predict::top1); the two most probable experts'
  // own probabilities weighted by their gate values (Predict::top2); or the
  // anytime model at `tau`, each sample through the experts with
  // g_k (1 - max_y phi(y|x)) >= tau, or the base model alone when there is
  // none (Predict::anytime). Equal to what forward() gives for the same rule
  // (eval/anytime.h's *_probs).
  enum class Predict { base, top1, top2, anytime };
  // The `ensembler` of an expert alone: its own probabilities (the report's
  // "no_ensembling").
  static constexpr const char* kNoEnsembler = "none";
  at::Tensor predict(const at::Tensor& images, Predict rule, const std::string& ensembler = "bagging", double tau = 0);
  // The same, with what each sample ran (models/prediction.h): `weight`
  // [B, K] is the weight of each expert's output (0 where the expert did not
  // run) and `early` [B] marks the samples answered by the base model alone. `tau` is a
  // 0-d tensor. With `traceable`, no branch depends on the data (an expert
  // with no sample runs on an empty batch), so that a trace of it is the
  // rule for any batch and any tau (models/moe_export.h); without, an expert
  // with no sample is skipped (the same result).
  Prediction predict_routed(const at::Tensor& images, Predict rule, const std::string& ensembler, const at::Tensor& tau,
                            bool traceable = false);
  // e'_k(.|x) [B, C] under ensembler `name`, from expert k's and the base model's logits.
  at::Tensor ensembled_probs(int64_t k, const std::string& name, const at::Tensor& base_logits,
                             const at::Tensor& expert_logits);

  // MACs per image: the whole base model, the gate, expert k, an ensembler.
  double base_macs() const;
  double gate_macs() const { return static_cast<double>(gate_->forward_macs()); }
  double expert_macs(int64_t k) const;
  double ensembler_macs(const std::string& name) const;

 private:
  Backbone base_;
  int64_t branch_after_;
  bool normalize_;
  Gate gate_;
  std::vector<Expert> experts_;
  std::vector<std::map<std::string, EnsemblerNet>> nets_;
  EnsemblerRules rules_;
};

}  // namespace smoe::models
