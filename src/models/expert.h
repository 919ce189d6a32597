// Expert architectures (Royer et al. Algorithm 1 step 4; LEMUR's
// heterogeneous experts later). An expert maps the frozen trunk's features
// (the output of the base model's blocks [0, branch_after)) to class logits.
// The default architecture, "branch", is a copy of the base model's blocks
// after branch_after and its head (a Backbone holding those blocks), started
// from the base model's weights. Other architectures register a factory in
// expert_architectures() (expert.cpp) and are chosen by experts.arch.
#pragma once

#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <type_traits>

#include "core/registry.h"
#include "models/network_spec.h"

namespace smoe::models {

class BackboneImpl;

struct HiddenAndLogits {
  at::Tensor hidden;  // [B, hidden_dim()] the last hidden layer
  at::Tensor logits;  // [B, classes]
};

class ExpertModule : public torch::nn::Module {
 public:
  // Logits [B, classes] from trunk features [B, C', H', W'].
  virtual at::Tensor forward(const at::Tensor& trunk_features) = 0;
  // The last hidden layer with the logits (what Krishnamurthy et al.'s
  // attentive gate attends to). Architectures without one fail.
  virtual HiddenAndLogits forward_hidden(const at::Tensor& trunk_features);
  // Size of that hidden layer (0: none).
  virtual int64_t hidden_dim() const { return 0; }
  // Multiply-accumulates of one forward pass for one image.
  virtual int64_t forward_macs() const = 0;
  // Starting weights from the trained base model (an architecture that
  // cannot reuse them keeps its own initialisation).
  virtual void init_from_base(BackboneImpl& base) {}
};
using Expert = std::shared_ptr<ExpertModule>;

// What an architecture is built for.
struct ExpertSpec {
  NetworkSpec base;          // the base model (input shape, classes, width)
  int64_t branch_after = 3;  // blocks shared (frozen) with the base
  int64_t index = 0;         // which expert (for per-expert architectures)
  int64_t depth = 0;         // "branch": the tiny_resnet depth of its blocks (0: the base's)
  // The architecture's own options (experts.<arch>.*, core/variant_options.h),
  // if it registered any; null: their defaults.
  std::shared_ptr<const options::VariantOptions> options = nullptr;
};

// A registered architecture: how to build one, and what the pipeline may
// ask of it (so that no check compares experts.arch with a name).
class ExpertFactory {
 public:
  // copies_base_blocks: the expert is the base model's blocks after
  // branch_after ("branch"): experts.depth sets their depth, and experts.fuse
  // trains several at once as one grouped network (models/fused_branch.h).
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ExpertFactory> &&
                                                    std::is_invocable_r_v<Expert, F, const ExpertSpec&>>>
  ExpertFactory(F make, bool copies_base_blocks = false)  // NOLINT: a registration names a function
      : make_(std::move(make)), copies_base_blocks_(copies_base_blocks) {}
  Expert operator()(const ExpertSpec& s) const { return make_(s); }
  bool copies_base_blocks() const { return copies_base_blocks_; }

 private:
  std::function<Expert(const ExpertSpec&)> make_;
  bool copies_base_blocks_ = false;
};

// experts.arch -> factory. Built in: "branch", "small_cnn" (models/small_cnn.h),
// "alexnet", "densenet", "bagnet", "mlp" (models/backbones.h).
Registry<ExpertFactory>& expert_architectures();

}  // namespace smoe::models
