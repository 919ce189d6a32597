#include "models/expert.h"

#include <torch/torch.h>

#include "core/error.h"
#include "models/backbones.h"
#include "models/network.h"
#include "models/small_cnn.h"

namespace smoe::models {

HiddenAndLogits ExpertModule::forward_hidden(const at::Tensor&) {
  fail("expert architecture {} has no hidden layer to attend to (gate.kind attentive)", name());
}

namespace {

// What an expert reads: the images, or the frozen trunk's features.
std::vector<int64_t> expert_input(const ExpertSpec& s) {
  return s.branch_after == 0 ? s.base.input : Backbone(s.base).ptr()->input_shape_of(s.branch_after);
}

template <Expert (*Make)(const BackboneSpec&)>
Expert backbone_expert(const ExpertSpec& s) {
  return Make({expert_input(s), s.base.width, s.base.hidden.at(0), s.base.num_classes});
}

Expert small_cnn_expert(const ExpertSpec& s) {
  SmallCnnSpec spec;
  spec.input = expert_input(s);
  spec.channels = s.base.width;
  spec.hidden = s.base.hidden;
  spec.outputs = s.base.num_classes;
  return std::make_shared<SmallCnnExpertImpl>(spec);
}

}  // namespace

Registry<ExpertFactory>& expert_architectures() {
  static Registry<ExpertFactory> registry("expert architecture", "experts.arch",
                                          // The base model's blocks after branch_after and its head (Algorithm 1).
                                          {{"branch", ExpertFactory(
                                                          [](const ExpertSpec& s) -> Expert {
                                                            NetworkSpec spec = s.base;
                                                            if (s.depth > 0) spec.depth = s.depth;
                                                            return Backbone(spec, s.branch_after).ptr();
                                                          },
                                                          /*copies_base_blocks=*/true)},
                                           // Krishnamurthy et al.'s small CNN, on the images or the trunk's features.
                                           {"small_cnn", small_cnn_expert},
                                           // Heterogeneous families (LEMUR): models/backbones.h.
                                           {"alexnet", backbone_expert<make_alexnet_expert>},
                                           {"densenet", backbone_expert<make_densenet_expert>},
                                           {"bagnet", backbone_expert<make_bagnet_expert>},
                                           {"mlp", backbone_expert<make_mlp_expert>}},
                                          {"experts.archs"});
  return registry;
}

namespace {
[[maybe_unused]] const bool loads = options::add_variant_loader([] { expert_architectures(); });
}  // namespace

}  // namespace smoe::models
