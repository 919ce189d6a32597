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
//
// With top_k = k > 0 (Shazeer et al.'s top-k routing, LEMUR's top-2) only
// the k largest gate logits of a sample are kept, g is the softmax over
// them (0 elsewhere), and each expert runs only on the samples routed to it
// (sparse dispatch); its logits are 0 for the others.
//
// With a shared trunk (experts.branch_after = n > 0 in the joint scheme:
// blocks [0, n) of model.arch, LEMUR's shared convolutional trunk), the gate
// and the experts read the trunk's features and all three train together.
#pragma once

#include <torch/nn/module.h>

#include <vector>

#include "models/expert.h"
#include "models/gate.h"
#include "models/network.h"
#include "models/prediction.h"

namespace smoe::models {

struct JointOutputs {
  at::Tensor gate_logits;    // [B, K] (with the training noise, before top-k)
  at::Tensor routed;         // [B, K] bool: the experts each sample ran through
  at::Tensor gate_probs;     // [B, K] g(e|x)
  at::Tensor expert_logits;  // [B, K, C]
  at::Tensor mixture;        // [B, C] y_hat(x), probabilities
};

class JointMoeImpl : public torch::nn::Module {
 public:
  // With a trunk, the gate and the experts read its features and it trains
  // with them (it is frozen with the experts in forward_frozen_experts).
  JointMoeImpl(Gate gate, std::vector<Expert> experts, int64_t top_k = 0, Trunk trunk = nullptr);

  // noise: [B, K] N(0, 1) for a gate that is noisy in training (uses_noise()).
  JointOutputs forward(const at::Tensor& inputs, const at::Tensor& noise = {});
  // With the experts run without autograd (frozen experts: distillation).
  JointOutputs forward_frozen_experts(const at::Tensor& inputs, const at::Tensor& noise = {});
  // Every expert on every sample whatever the routing (the evaluation's
  // per-expert figures); g and the mixture as forward().
  JointOutputs forward_dense(const at::Tensor& inputs);
  // The report's rules (eval/joint_report.h) from forward_dense: mixture
  // (y_hat, weight g), top1 (the gate's argmax expert alone), top2 (the two
  // largest gate values, renormalised); early is all false. No size read and
  // no branch on values: a trace of it holds for any batch
  // (models/moe_export.h).
  enum class Rule { mixture, top1, top2 };
  Prediction predict(const at::Tensor& inputs, Rule rule);
  int64_t top_k() const { return top_k_; }

  GateModule& gate() { return *gate_; }
  const Gate& gate_ptr() const { return gate_; }
  // Replaces the gate (distillation: an attentive gate by a plain one).
  void set_gate(Gate gate);
  int64_t num_experts() const { return static_cast<int64_t>(experts_.size()); }
  ExpertModule& expert(int64_t e) { return *experts_.at(static_cast<size_t>(e)); }
  // Parameters of the shared trunk (unless frozen) and every expert: what
  // trains at the experts' learning rate and freezes with them.
  std::vector<at::Tensor> expert_parameters() const;
  // Freezes the trunk for good: no gradient, BatchNorm statistics kept (eval
  // mode whatever the MoE's mode). Algorithm 1's trunk when fine-tuned.
  void freeze_trunk();
  void train(bool on = true) override;

  // MACs per input: the shared trunk (0 without), the gate, and expert e.
  int64_t trunk_macs() const { return trunk_ ? trunk_->macs() : 0; }
  bool has_trunk() const { return static_cast<bool>(trunk_); }
  int64_t gate_macs() const { return gate_->forward_macs(); }
  int64_t expert_macs(int64_t e) const { return experts_.at(static_cast<size_t>(e))->forward_macs(); }

 private:
  JointOutputs run(const at::Tensor& inputs, const at::Tensor& noise, bool experts_grad, bool dense);
  // g from the gate's logits: softmax over the top-k (all when top_k is 0); sets o.routed.
  void route(JointOutputs& o) const;
  int64_t top_k_ = 0;
  Trunk trunk_{nullptr};
  bool trunk_frozen_ = false;
  Gate gate_;
  std::vector<Expert> experts_;
};

// -log(y_hat(y|x) + 1e-7) per sample [B] (the authors' NLL on the mixture);
// with label smoothing eps, (1 - eps) of it + eps * mean_c -log(y_hat(c|x) + 1e-7).
at::Tensor mixture_nll(const at::Tensor& mixture, const at::Tensor& labels, double smoothing = 0);

}  // namespace smoe::models
