// What a network of the tiny-ResNet / plain-CNN family is built from
// (network.h). Torch-free, so that config-level code can describe models
// without compiling libtorch headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/options.h"

namespace smoe::models {

// The network family (model.arch).
enum class NetworkArch { tiny_resnet, plain_cnn };
inline const options::Names<NetworkArch>& option_names(NetworkArch) {
  static const options::Names<NetworkArch> n{{NetworkArch::tiny_resnet, "tiny_resnet"},
                                             {NetworkArch::plain_cnn, "plain_cnn"}};
  return n;
}

struct NetworkSpec {
  NetworkArch arch = NetworkArch::tiny_resnet;
  int64_t depth = 10;                        // tiny_resnet: 10, 18 or 34
  int64_t width = 16;                        // channels of the first stage
  std::vector<int64_t> input = {1, 28, 28};  // C, H, W
  int64_t num_classes = 10;
  std::vector<int64_t> hidden = {128, 64};  // small_cnn experts and gates: the two hidden layers

  static constexpr int64_t kBlocks = 5;  // stem + 4 stages
  // Checks the values and names the bad one.
  void validate() const;
  int64_t prelogit_dim() const { return 8 * width; }
};

}  // namespace smoe::models
