// Accuracy and cost of the MoE's inference rules, from per-sample outputs
// computed once: base probabilities phi(y|x) [N, C], gate g(k|x) [N, K] and
// every expert's (ensembled) probabilities [N, K, C]. A whole grid of tau is
// evaluated from the same tensors.
//
// Anytime model (Royer et al. Section 2.3, eq. 2-3):
//   alpha_k(x) = g(k|x) (1 - max_y phi(y|x))
//   ee(x) = 1 iff alpha_k(x) < tau for every k  (early exit: base prediction)
//   p(y|x) = sum_k 1(alpha_k(x) >= tau) g(k|x) e'_k(y|x)   otherwise
// Cost of a sample = base + gate + sum of the experts it runs (their
// non-shared blocks) + one ensembler per expert run.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace smoe::eval {

struct Costs {
  double base = 0;              // MACs of the full base model
  double gate = 0;              // the gate's linear layer
  std::vector<double> experts;  // each expert's non-shared part
  double ensembler = 0;         // one ensembler (0 for bagging)
};

struct Point {
  double tau = -1;  // -1 when not an anytime point
  double accuracy = 0;
  double macs = 0;             // mean per sample
  double early_exit_rate = 0;  // fraction answered by the base model alone
  double mean_experts = 0;     // mean experts run per sample
};

// The base model alone.
Point base_point(const at::Tensor& base_probs, const at::Tensor& labels, const Costs& c);
// One expert per sample, the gate's argmax; `probs` [N, K, C] are the
// experts' outputs (raw, or ensembled with the base).
Point top1_point(const at::Tensor& gate, const at::Tensor& probs, const at::Tensor& labels, const Costs& c,
                 double ensembler_macs);
// The two most probable experts, weighted by their gate values, no base.
Point top2_point(const at::Tensor& gate, const at::Tensor& expert_probs, const at::Tensor& labels, const Costs& c);
// The anytime model at threshold tau.
Point anytime_point(const at::Tensor& base_probs, const at::Tensor& gate, const at::Tensor& ens_probs,
                    const at::Tensor& labels, double tau, const Costs& c);

// Indices of the points on the upper convex envelope of (macs, accuracy),
// from the cheapest point up to the most accurate one, by increasing MACs.
std::vector<size_t> convex_envelope(const std::vector<Point>& points);

}  // namespace smoe::eval
