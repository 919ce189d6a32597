// Gates of a jointly trained MoE (Krishnamurthy et al. Section 5 and
// Appendix B.1), which read the experts' input rather than a base model's
// outputs:
//
//   cnn        g(.|x) = softmax(out(h_g(x))), h_g the small CNN's last hidden layer
//   attentive  g(.|x) = softmax_e( (h_g(x) W_q) . (h_e(x) W_k) / sqrt(h) )   (eqs. 4-6)
//
// The attentive gate's trunk is the small CNN without its output layer and
// with no activation after the second hidden layer (the query's input);
// h_e is expert e's last hidden layer. Because it needs every expert's
// features, an attentive MoE has no conditional computation: the distill
// stage replaces it with a cnn gate started from the same trunk.
#pragma once

#include <torch/nn/modules/linear.h>

#include "models/gate.h"
#include "models/small_cnn.h"

namespace smoe::models {

class CnnGateImpl : public GateModule {
 public:
  explicit CnnGateImpl(const GateSpec& spec);
  at::Tensor forward(const GateFeatures& f) override { return net->forward(f.inputs); }
  int64_t forward_macs() const override { return net->macs(); }
  bool reads_inputs() const override { return true; }
  SmallCnn net{nullptr};
};

class AttentiveGateImpl : public GateModule {
 public:
  explicit AttentiveGateImpl(const GateSpec& spec);
  // Attention scores [B, K] (the logits of g).
  at::Tensor forward(const GateFeatures& f) override;
  int64_t forward_macs() const override;
  bool reads_inputs() const override { return true; }
  bool needs_expert_hidden() const override { return true; }
  SmallCnn net{nullptr};
  torch::nn::Linear query{nullptr}, key{nullptr};  // W_q [h -> h], W_k [h_e -> h], no bias

 private:
  int64_t experts_, hidden_, expert_hidden_;
};

}  // namespace smoe::models
