// Ensemblers (Royer et al. Section 2.3, Table 6): how expert k's prediction
// is combined with the base model's into e'_k(y|x). Bagging averages the two
// probability vectors; stacking learns d_k, a linear layer on the
// concatenated logits, per expert. Every registered ensembler is evaluated
// in the report (Table 6 compares them at equal cost); ensembler.kind picks
// the one the anytime model and the EM E-step use. New kinds register in
// ensemblers() (ensembler.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <memory>

#include "core/registry.h"

namespace smoe::models {

// A trained combiner d_k: logits [B, C] from base and expert logits [B, C].
class EnsemblerModule : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& base_logits, const at::Tensor& expert_logits) = 0;
};
using EnsemblerNet = std::shared_ptr<EnsemblerModule>;

class StackingImpl : public EnsemblerModule {
 public:
  // Starts as the average of the two logit vectors.
  explicit StackingImpl(int64_t classes);
  at::Tensor forward(const at::Tensor& base_logits, const at::Tensor& expert_logits) override;
  torch::nn::Linear linear{nullptr};
};

class Ensembler {
 public:
  virtual ~Ensembler() = default;
  // A fresh d_k for one expert, trained after the expert; nullptr when the
  // rule has nothing to train.
  virtual EnsemblerNet build(int64_t classes) const { return nullptr; }
  // e'_k(.|x) [B, C] from base and expert logits; `net` is what build() made
  // (trained), or nullptr.
  virtual at::Tensor probs(const at::Tensor& base_logits, const at::Tensor& expert_logits,
                           EnsemblerModule* net) const = 0;
  // MACs per image beyond the base model and the expert.
  virtual double macs(int64_t classes) const = 0;
};

// ensembler.kind -> rule. Built in: "bagging", "stacking".
Registry<std::shared_ptr<const Ensembler>>& ensemblers();

// Bagging: (softmax(base) + softmax(expert)) / 2 [B, C].
at::Tensor bagging_probs(const at::Tensor& base_logits, const at::Tensor& expert_logits);

}  // namespace smoe::models
