// What an inference rule gives for a batch, whichever MoE family computed it
// (Algorithm 1's single-gate MoE, models/moe.h; a jointly trained one,
// models/joint_moe.h): what `smoe predict` writes and an exported file's
// predict() returns.
#pragma once

#include <ATen/core/Tensor.h>

namespace smoe::models {

struct Prediction {
  at::Tensor probs;   // [B, C] the class scores the rule predicts by (argmax)
  at::Tensor weight;  // [B, K] each expert's weight in them (0: the expert did not run or does not count)
  at::Tensor early;   // [B] bool: answered by the base model alone (anytime)
};

}  // namespace smoe::models
