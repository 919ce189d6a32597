// The model section of the configuration (model.*): the network family the
// base model, the branch experts and the gates are built from. Each key
// beside its field (core/options.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/options.h"
#include "models/network_spec.h"

namespace smoe {

struct ModelConfig {
  models::NetworkArch arch = models::NetworkArch::tiny_resnet;
  int64_t depth = 10;                       // tiny_resnet depth: 10 | 18 | 34
  int64_t width = 16;                       // channels of the first stage (small_cnn: of its convolution)
  std::vector<int64_t> hidden = {128, 64};  // small_cnn experts and gates: the two hidden layers

  void describe(options::Table& t) {
    t.key("arch", arch, "network family");
    t.key("depth", depth, "tiny_resnet depth (10, 18 or 34)").at_least(10).at_most(34);
    t.rule([this](const std::string& at) {
      SMOE_CHECK(depth == 10 || depth == 18 || depth == 34, "config key '{}depth': expected 10, 18 or 34, got {}", at,
                 depth);
    });
    t.key("width", width,
          "channels of the first stage (doubled at every down-sampling); small_cnn: channels of its convolution")
        .at_least(1);
    t.key("hidden", hidden,
          "small_cnn experts and gates (Krishnamurthy et al. Appendix B): sizes of the two hidden layers")
        .at_least(1);
  }
};

}  // namespace smoe
