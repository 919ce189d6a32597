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

#include <cstdint>
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

// What an inference rule did on a set of samples, as integers that add up
// exactly across batches and ranks (the evaluation is a reduction of these;
// no rank gathers per-sample outputs).
struct RuleCount {
  int64_t samples = 0;
  int64_t correct = 0;
  int64_t early_exits = 0;     // answered by the base model alone
  std::vector<int64_t> runs;   // [K] samples that ran expert k
  int64_t ensembler_runs = 0;  // experts run through an ensembler
  void add(const RuleCount& other);
};
// The rule's point: accuracy, and MACs from the counts
// (base + gate + sum_k runs_k cost_k / n + ensembler_runs * ensembler / n).
Point point_of(const RuleCount& r, const Costs& c, double ensembler_macs, bool base_only = false);

// Counts of one batch. `probs` [n, K, C] are the experts' outputs (raw, or
// ensembled with the base; `ensembled` says whether each run pays an
// ensembler).
RuleCount count_base(const at::Tensor& base_probs, const at::Tensor& labels, int64_t experts);
// Each rule's class probabilities [n, C] (what count_* below score).
at::Tensor top1_probs(const at::Tensor& gate, const at::Tensor& probs);
at::Tensor top2_probs(const at::Tensor& gate, const at::Tensor& expert_probs);
at::Tensor anytime_probs(const at::Tensor& base_probs, const at::Tensor& gate, const at::Tensor& ens_probs, double tau);

// One expert per sample, the gate's argmax.
RuleCount count_top1(const at::Tensor& gate, const at::Tensor& probs, const at::Tensor& labels, bool ensembled);
// The two most probable experts, weighted by their gate values, no base.
RuleCount count_top2(const at::Tensor& gate, const at::Tensor& expert_probs, const at::Tensor& labels);
// The anytime model at threshold tau (every expert run is ensembled).
RuleCount count_anytime(const at::Tensor& base_probs, const at::Tensor& gate, const at::Tensor& ens_probs,
                        const at::Tensor& labels, double tau);

// The points of whole tensors (one batch holding every sample).
Point base_point(const at::Tensor& base_probs, const at::Tensor& labels, const Costs& c);
Point top1_point(const at::Tensor& gate, const at::Tensor& probs, const at::Tensor& labels, const Costs& c,
                 double ensembler_macs);
Point top2_point(const at::Tensor& gate, const at::Tensor& expert_probs, const at::Tensor& labels, const Costs& c);
Point anytime_point(const at::Tensor& base_probs, const at::Tensor& gate, const at::Tensor& ens_probs,
                    const at::Tensor& labels, double tau, const Costs& c);

// Indices of the points on the upper convex envelope of (macs, accuracy),
// from the cheapest point up to the most accurate one, by increasing MACs.
std::vector<size_t> convex_envelope(const std::vector<Point>& points);

}  // namespace smoe::eval
