// Ensemblers (Royer et al. Section 2.3, Table 6): how expert k's prediction
// is combined with the base model's into e'_k(y|x). Bagging averages the two
// probability vectors; stacking learns d_k, a linear layer on the
// concatenated logits, per expert. Every registered ensembler is evaluated
// in the report (Table 6 compares them at equal cost); ensembler.kind picks
// the one the anytime model and the EM E-step use. New kinds register in
// ensemblers() (ensembler.cpp); a kind with options of its own registers a
// factory that makes its rule from them (ensembler.<kind>.*).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>

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

// A registered ensembler: how its rule is made from its own options
// (ensembler.<kind>.*, core/variant_options.h; null: their defaults). A
// rule without options registers itself.
class EnsemblerFactory {
 public:
  EnsemblerFactory(std::shared_ptr<const Ensembler> rule)  // NOLINT: a registration names a rule
      : make_([rule = std::move(rule)](const options::VariantOptions*) { return rule; }) {}
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, EnsemblerFactory> &&
                                                    std::is_invocable_r_v<std::shared_ptr<const Ensembler>, F,
                                                                          const options::VariantOptions*>>>
  EnsemblerFactory(F make)  // NOLINT: a registration names a function
      : make_(std::move(make)) {}
  std::shared_ptr<const Ensembler> operator()(const options::VariantOptions* options = nullptr) const {
    return make_(options);
  }

 private:
  std::function<std::shared_ptr<const Ensembler>(const options::VariantOptions*)> make_;
};

// Every registered rule, by name, made with their options.
using EnsemblerRules = std::map<std::string, std::shared_ptr<const Ensembler>>;

// ensembler.kind -> rule. Built in: "bagging", "stacking".
Registry<EnsemblerFactory>& ensemblers();

// Bagging: (softmax(base) + softmax(expert)) / 2 [B, C].
at::Tensor bagging_probs(const at::Tensor& base_logits, const at::Tensor& expert_logits);

}  // namespace smoe::models
