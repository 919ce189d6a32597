// Expert architectures of different families for heterogeneous MoEs (the
// LEMUR study's AlexNet, DenseNet and BagNet-style experts), small enough
// for 28x28 and 32x32 inputs or a trunk's feature maps. Each reads [C, H, W]
// (the images when experts.branch_after is 0, else the frozen trunk's
// features), counts its MACs per layer, and starts from scratch (Algorithm
// 1's theta_e <- theta_phi applies only to "branch"). Width w = model.width.
//
//   alexnet   conv3x3(w) ReLU pool, conv3x3(2w) ReLU pool, conv3x3(4w) ReLU,
//             adaptive average pool to 2x2, FC(hidden[0]) ReLU, FC(classes)
//   densenet  conv3x3(w), two dense blocks of three BN-ReLU-conv3x3 layers
//             (growth w/2, each layer's output concatenated to its input)
//             with a 1x1 transition and 2x2 average pool between them,
//             BN-ReLU, global average pool, FC(classes)
//   bagnet    small receptive fields (BagNet: local patches vote): conv3x3(w)
//             ReLU, three conv1x1 with ReLU (2w, 2w, 4w), a 1x1 classifier
//             per position, class logits averaged over positions
//   mlp       average pool to 4x4, FC(hidden[0]) ReLU, FC(hidden[0]) ReLU,
//             FC(classes): LEMUR experiment 1's fully connected experts on a
//             shared trunk's features
//
// Pooling is skipped where a feature map is already smaller than 4x4.
#pragma once

#include "models/expert.h"

namespace smoe::models {

struct BackboneSpec {
  std::vector<int64_t> input;  // [C, H, W]
  int64_t width = 16;
  int64_t hidden = 128;
  int64_t classes = 10;
};

// Factories of the registry entries "alexnet", "densenet", "bagnet", "mlp".
Expert make_alexnet_expert(const BackboneSpec& spec);
Expert make_densenet_expert(const BackboneSpec& spec);
Expert make_bagnet_expert(const BackboneSpec& spec);
Expert make_mlp_expert(const BackboneSpec& spec);

}  // namespace smoe::models
