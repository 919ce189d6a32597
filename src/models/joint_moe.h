// A jointly trained MoE (Jacobs et al.'s output mixture model, as
// Krishnamurthy et al. train it): a gate g and K experts f_e that all read
// the same input, combined as
//
//   y_hat(x) = sum_e g(e|x) softmax(f_e(x))                        (Section 1)
//
// trained end to end on NLL(log(y_hat + 1e-7)). The gate is any gate kind
// that reads the input (models/cnn_gate.h); the experts any expert
// architecture (models/expert.h): full networks on the images
// (experts.branch_after = 0). The attentive gate also receives every
// expert's last hidden layer.
#pragma once

#include <torch/nn/module.h>

#include <vector>

#include "models/expert.h"
#include "models/gate.h"

namespace smoe::models {

struct JointOutputs {
  at::Tensor gate_logits;    // [B, K]
  at::Tensor gate_probs;     // [B, K] g(e|x)
  at::Tensor expert_logits;  // [B, K, C]
  at::Tensor mixture;        // [B, C] y_hat(x), probabilities
};

class JointMoeImpl : public torch::nn::Module {
 public:
  JointMoeImpl(Gate gate, std::vector<Expert> experts);

  JointOutputs forward(const at::Tensor& inputs);
  // With the experts run without autograd (frozen experts: distillation).
  JointOutputs forward_frozen_experts(const at::Tensor& inputs);

  GateModule& gate() { return *gate_; }
  const Gate& gate_ptr() const { return gate_; }
  // Replaces the gate (distillation: an attentive gate by a plain one).
  void set_gate(Gate gate);
  int64_t num_experts() const { return static_cast<int64_t>(experts_.size()); }
  ExpertModule& expert(int64_t e) { return *experts_.at(static_cast<size_t>(e)); }
  // Parameters of every expert / of the gate.
  std::vector<at::Tensor> expert_parameters() const;

  // MACs per input: the gate, and expert e.
  int64_t gate_macs() const { return gate_->forward_macs(); }
  int64_t expert_macs(int64_t e) const { return experts_.at(static_cast<size_t>(e))->forward_macs(); }

 private:
  JointOutputs run(const at::Tensor& inputs, bool experts_grad);
  Gate gate_;
  std::vector<Expert> experts_;
};

// -log(y_hat(y|x) + 1e-7) per sample [B] (the authors' NLL on the mixture).
at::Tensor mixture_nll(const at::Tensor& mixture, const at::Tensor& labels);

}  // namespace smoe::models
