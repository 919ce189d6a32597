// The evaluation of a jointly trained MoE (models/joint_moe.h) from its
// outputs on the test split, as integer counts summed over batches and
// ranks (like eval::Tally): the output mixture sum_e g(e|x) softmax(f_e(x))
// (what it was trained as; an expert runs where its g > 0), top-1 routing (the expert of argmax g alone:
// conditional computation), top-2 (the two largest gates, renormalised),
// each expert alone, Krishnamurthy et al.'s specialisation metrics and the
// routing table. Knows nothing of ranks or run folders.
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "eval/class_metrics.h"
#include "eval/packed_counts.h"
#include "eval/specialisation.h"

namespace smoe::eval {

struct JointCosts {
  double gate = 0;                      // MACs per input
  std::vector<double> experts;          // [K]
  bool gate_runs_every_expert = false;  // the attentive gate: every expert runs whatever the routing
};

class JointTally : public PackedCounts {
 public:
  JointTally(int64_t experts, int64_t num_classes);
  // labels int64 [n]; gate [n, K]; expert_logits [n, K, C]; mixture [n, C].
  void add(const at::Tensor& labels, const at::Tensor& gate, const at::Tensor& expert_logits,
           const at::Tensor& mixture);
  int64_t samples() const { return samples_; }
  // "mixture", "top1" ({accuracy, macs, map, balanced_accuracy}), "top2" ({accuracy, macs}), "experts_alone" (accuracy
  // per expert), "specialisation", "routing".
  nlohmann::json report(const JointCosts& costs) const;

 private:
  void each_field(const std::function<void(int64_t&)>& f) override;

  int64_t experts_, classes_;
  int64_t samples_ = 0, mixture_ = 0, top1_ = 0, top2_ = 0;
  std::vector<int64_t> alone_;         // [K] correct when expert k answers alone
  std::vector<int64_t> top2_runs_;     // [K] samples whose top-2 includes expert k with g > 0
  std::vector<int64_t> mixture_runs_;  // [K] samples with g(k|x) > 0 (a top-k gate's zeros run nothing)
  SpecialisationCount spec_;
  ClassCount mixture_classes_, top1_classes_;  // mAP and balanced accuracy of the mixture and of top-1 routing
};

}  // namespace smoe::eval
