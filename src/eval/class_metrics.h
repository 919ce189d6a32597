// Per-class metrics of a classifier's test predictions, as DFCP-MoE reports
// them: mean average precision (one-vs-rest AP per class, averaged over the
// classes present) and balanced accuracy (mean per-class recall).
//
// AP needs every score ranked; to keep a rank's memory bounded and the
// counts summable over ranks (like eval::Tally), each class's scores are
// binned by log-odds z = ln p - ln(1 - p), clamped to [-16, 16], in 2048
// bins (1/64 wide): samples in one bin count as tied scores, which is how
// scikit-learn's average_precision_score treats equal scores. The binned AP
// equals the exact one when no bin holds both a positive and a negative.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace smoe::eval {

struct ClassCount {
  // All zero, for C classes and score_bins(C) bins.
  static ClassCount zeros(int64_t classes);
  int64_t classes = 0, bins = 0;
  std::vector<int64_t> positives, negatives;  // [C * bins]: samples of (not of) class c scoring in bin b
  std::vector<int64_t> total, correct;        // [C]: samples of class c, and those predicted c
  void add(const ClassCount& other);
  // Every integer, in a fixed order (for the allreduce of eval::Tally).
  template <typename F>
  void each(F&& f) {
    for (auto& v : positives) f(v);
    for (auto& v : negatives) f(v);
    for (auto& v : total) f(v);
    for (auto& v : correct) f(v);
  }
};

// Bins per class for C classes: 2048, or 2^18 / C (at least 64) beyond 128 classes.
int64_t score_bins(int64_t classes);

// Counts of one batch: probs [n, C] (rows sum to 1), labels int64 [n].
ClassCount count_classes(const at::Tensor& probs, const at::Tensor& labels, int64_t bins);

struct ClassMetrics {
  double map = 0;                // mean AP over the classes with a positive
  double balanced_accuracy = 0;  // mean recall over the classes with a sample
  std::vector<double> ap;        // per class (NaN without a positive)
};
ClassMetrics class_metrics(const ClassCount& count);

// Exact AP (scikit-learn's definition, ties grouped) of scores [n] for the
// positives (bool [n]); NaN without a positive.
double average_precision(const at::Tensor& scores, const at::Tensor& positive);

}  // namespace smoe::eval
