// Algorithm 1's gate inside a jointly trained MoE: Royer et al.'s gate reads
// the base model's embedding of an image, but a jointly trained MoE hands its
// gate what the experts read (the shared trunk's features). This adapter
// holds the base model's blocks after the trunk and its head, frozen (weights
// and BatchNorm statistics: it stays in eval mode), turns the trunk's
// features into the embedding and base logits, and routes them through the
// trained gate, which goes on learning. It is what joint fine-tuning and gate
// distillation after Algorithm 1 route with (stage "finetune").
#pragma once

#include "models/gate.h"
#include "models/network.h"

namespace smoe::models {

class BaseTailGateImpl : public GateModule {
 public:
  // tail: the base model's blocks [trunk, 5) and head; inner: the gate of
  // Algorithm 1 (linear on the embedding); normalize: cluster.normalize.
  BaseTailGateImpl(Backbone tail, Gate inner, bool normalize);
  at::Tensor forward(const GateFeatures& f) override;
  int64_t forward_macs() const override;
  bool reads_inputs() const override { return true; }
  // The tail stays in eval mode whatever the MoE's mode.
  void train(bool on = true) override;
  GateModule& inner() { return *inner_; }

 private:
  Backbone tail_{nullptr};
  Gate inner_;
  bool normalize_;
};

}  // namespace smoe::models
