// Gates of a jointly trained MoE (Krishnamurthy et al. Section 5 and
// Appendix B.1), which read the experts' input rather than a base model's
// outputs:
//
//   cnn        g(.|x) = softmax(out(h_g(x))), h_g the small CNN's last hidden layer
//   attentive  g(.|x) = softmax_e( (h_g(x) W_q) . (h_e(x) W_k) / sqrt(h) )   (eqs. 4-6)
//   noisy      logits = out(h_g) + eps * softplus(noise(h_g)) in training   (Shazeer et al.'s noisy gating, LEMUR 1)
//   tempered   logits = out(h_g) / clamp(T, 0.5, 5) + 0.1 eps in training, T learned from 2   (LEMUR 2, 3)
//
// eps ~ N(0, 1) comes in GateFeatures::noise, drawn by the trainer from the
// run seed; without it (evaluation) the noisy gates are deterministic.
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

class NoisyGateImpl : public GateModule {
 public:
  explicit NoisyGateImpl(const GateSpec& spec);
  at::Tensor forward(const GateFeatures& f) override;
  int64_t forward_macs() const override { return net->macs(); }  // the noise head runs in training only
  bool reads_inputs() const override { return true; }
  bool uses_noise() const override { return true; }
  SmallCnn net{nullptr};
  torch::nn::Linear noise{nullptr};  // W_noise: the noise's scale per expert
};

class TemperedGateImpl : public GateModule {
 public:
  static constexpr double kNoiseStd = 0.1, kMinT = 0.5, kMaxT = 5.0, kInitialT = 2.0;
  explicit TemperedGateImpl(const GateSpec& spec);
  at::Tensor forward(const GateFeatures& f) override;
  int64_t forward_macs() const override { return net->macs(); }
  bool reads_inputs() const override { return true; }
  bool uses_noise() const override { return true; }
  double temperature() const;
  SmallCnn net{nullptr};
  at::Tensor log_temperature;  // the temperature is learned as its logarithm
};

}  // namespace smoe::models
