#include "train/losses.h"

#include <torch/torch.h>

namespace smoe::train {

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets, double label_smoothing) {
  at::Tensor logp = torch::log_softmax(logits, 1);
  at::Tensor nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1);
  if (label_smoothing <= 0) return nll;
  return (1.0 - label_smoothing) * nll - label_smoothing * logp.mean(1);
}

at::Tensor kl_to_logits(const at::Tensor& p, const at::Tensor& logits) {
  at::Tensor logq = torch::log_softmax(logits, 1);
  at::Tensor plogp = torch::where(p > 0, p * torch::log(p.clamp_min(1e-30)), torch::zeros_like(p));
  return (plogp - p * logq).sum(1);
}

at::Tensor posterior(const at::Tensor& gate, const at::Tensor& likelihood) {
  at::Tensor q = gate * likelihood;
  return q / q.sum(1, true).clamp_min(1e-30);
}

at::Tensor clip_weights(const at::Tensor& gate_probs, double gamma) { return gate_probs.clamp(gamma, 1.0); }

}  // namespace smoe::train
