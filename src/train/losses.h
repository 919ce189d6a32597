// Losses of the pipeline.
#pragma once

#include <ATen/core/Tensor.h>

namespace smoe::train {

// Per-sample cross-entropy [B] with optional label smoothing.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, double label_smoothing);

// KL(target || softmax(logits)) summed over experts, per sample [B]
// (Algorithm 1 step 3: the gate g fits g0; in EM mode it fits q).
at::Tensor kl_to_logits(const at::Tensor& target_probs, const at::Tensor& logits);

// EM posterior q(k|x) ∝ g(k|x) e'_k(y|x), normalised per sample
// (gate [N, K], likelihood of the true class under each expert [N, K]).
at::Tensor posterior(const at::Tensor& gate, const at::Tensor& likelihood);

// w_k(x) = clip(g(k|x), gamma, 1) (Royer et al. Section 2.2).
at::Tensor clip_weights(const at::Tensor& gate_probs, double gamma);

}  // namespace smoe::train
