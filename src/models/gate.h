// Gates: g(k|x), the router of the MoE. The default ("linear", Royer et al.
// Section 2.2) is a linear layer on the base model's pre-logits (L2-normalised
// when cluster.normalize is on, the space K-means ran in). Per-class routing
// (Table 5) is a fixed gate that sums the base model's class probabilities
// per expert. Other kinds register a factory in gate_kinds() (gate.cpp) and
// are chosen by gate.kind.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <vector>

#include "core/registry.h"

namespace smoe::models {

// What a gate sees of a sample: the base model's outputs (Algorithm 1), or
// the experts' input and, for the attentive gate, the experts' last hidden
// layers (jointly trained MoEs). Fields a gate kind does not read may be
// undefined.
struct GateFeatures {
  GateFeatures() = default;
  GateFeatures(at::Tensor embedding, at::Tensor base_logits, at::Tensor inputs = {}, at::Tensor expert_hidden = {},
               at::Tensor noise = {})
      : embedding(std::move(embedding)),
        base_logits(std::move(base_logits)),
        inputs(std::move(inputs)),
        expert_hidden(std::move(expert_hidden)),
        noise(std::move(noise)) {}
  at::Tensor embedding;      // [B, D] pre-logits (normalised when cluster.normalize)
  at::Tensor base_logits;    // [B, C]
  at::Tensor inputs;         // [B, C, H, W] what the experts read (scheme joint)
  at::Tensor expert_hidden;  // [B, K, H] each expert's last hidden layer (attentive gate)
  at::Tensor noise;          // [B, K] N(0, 1) draws for gates noisy in training (undefined: no noise)

  int64_t size() const { return embedding.size(0); }
  GateFeatures rows(const at::Tensor& ids) const;  // ids: int64 [b]
  GateFeatures to(const c10::Device& device) const;
};

class GateModule : public torch::nn::Module {
 public:
  // Logits over experts [B, K] (what training fits by KL).
  virtual at::Tensor forward(const GateFeatures& f) = 0;
  // g(k|x) [B, K]; rows sum to 1.
  virtual at::Tensor probabilities(const GateFeatures& f);
  virtual int64_t forward_macs() const = 0;
  // Whether the gate has weights to fit (a fixed routing has none).
  virtual bool trainable() const { return true; }
  // Start from the closed form of g0(k|x) = softmax_k(-|x - c_k|^2 / T) when
  // the gate can express it (Royer et al.: g is fitted to g0 from there).
  // Returns false when this kind cannot.
  virtual bool init_from_centroids(const at::Tensor& centroids, double temperature) { return false; }
  // Whether it reads GateFeatures::inputs (a gate of a jointly trained MoE)
  // rather than the base model's outputs.
  virtual bool reads_inputs() const { return false; }
  // Whether it needs GateFeatures::expert_hidden (then every expert runs
  // before the gate: no conditional computation).
  virtual bool needs_expert_hidden() const { return false; }
  // Whether it adds GateFeatures::noise to its logits in training (the
  // trainer draws it from the run seed, so that results do not depend on
  // the rank count).
  virtual bool uses_noise() const { return false; }
  // Starts from another gate's weights wherever a parameter has the same
  // name and shape (distillation starts a plain gate from the attentive
  // gate's trunk); returns how many tensors were copied.
  int64_t init_from(const GateModule& other);
};
using Gate = std::shared_ptr<GateModule>;

// g(k|x) = softmax(W x + b) on the embedding.
class LinearGateImpl : public GateModule {
 public:
  LinearGateImpl(int64_t embedding_dim, int64_t experts);
  at::Tensor forward(const GateFeatures& f) override { return linear->forward(f.embedding); }
  int64_t forward_macs() const override { return in_ * out_; }
  // softmax(-|x - c|^2 / T) is linear in x up to the per-sample |x|^2 term,
  // which the softmax ignores: W = 2c / T, b = -|c|^2 / T.
  bool init_from_centroids(const at::Tensor& centroids, double temperature) override;
  torch::nn::Linear linear{nullptr};

 private:
  int64_t in_, out_;
};

// Per-class routing: g(k|x) = sum of p(c|x) over the classes c of expert k
// (class_to_expert: int64 [C], a buffer set by the per-class initial gate).
class ClassRoutingGateImpl : public GateModule {
 public:
  ClassRoutingGateImpl(int64_t classes, int64_t experts);
  // log g, so that softmax(forward) = g.
  at::Tensor forward(const GateFeatures& f) override;
  at::Tensor probabilities(const GateFeatures& f) override;
  int64_t forward_macs() const override { return classes_ * experts_; }
  bool trainable() const override { return false; }
  at::Tensor class_to_expert;

 private:
  int64_t classes_, experts_;
};

struct GateSpec {
  GateSpec() = default;
  GateSpec(int64_t embedding_dim, int64_t classes, int64_t experts)
      : embedding_dim(embedding_dim), classes(classes), experts(experts) {}
  int64_t embedding_dim = 0;
  int64_t classes = 0;
  int64_t experts = 0;
  std::vector<int64_t> input;   // [C, H, W] of GateFeatures::inputs
  int64_t width = 16;           // small-CNN gates: channels of the convolution
  std::vector<int64_t> hidden;  // small-CNN gates: the two hidden layers
  int64_t expert_hidden = 0;    // attentive gate: size of the experts' last hidden layer
  // The kind's own options (gate.<kind>.*, core/variant_options.h), if it
  // registered any; null: their defaults.
  std::shared_ptr<const options::VariantOptions> options = nullptr;
};
using GateFactory = std::function<Gate(const GateSpec&)>;
// gate.kind -> factory. Built in: "linear", "class_routing" (used by
// cluster.method per_class), "cnn", "attentive", "noisy" and "tempered"
// (models/cnn_gate.h).
Registry<GateFactory>& gate_kinds();

}  // namespace smoe::models
