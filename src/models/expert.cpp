#include "models/expert.h"

#include <torch/torch.h>

#include "models/network.h"

namespace smoe::models {

Registry<ExpertFactory>& expert_architectures() {
  static Registry<ExpertFactory> registry(
      "expert architecture", "experts.arch",
      // The base model's blocks after branch_after and its head (Algorithm 1).
      {{"branch", [](const ExpertSpec& s) -> Expert { return Backbone(s.base, s.branch_after).ptr(); }}});
  return registry;
}

}  // namespace smoe::models
