// mAP and balanced accuracy (eval/class_metrics.h) against values computed by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "eval/class_metrics.h"

namespace smoe::eval {
namespace {

TEST(ClassMetrics, AveragePrecisionByHand) {
  // Ranked: +, -, +, -: AP = 1/2 * 1 + 1/2 * 2/3.
  EXPECT_NEAR(average_precision(torch::tensor({0.9, 0.8, 0.7, 0.6}), torch::tensor({true, false, true, false})),
              0.5 + 0.5 * 2.0 / 3, 1e-12);
  // Tied scores form one threshold: {+, -} at 0.9 then + at 0.1: 1/2 * 1/2 + 1/2 * 2/3.
  EXPECT_NEAR(average_precision(torch::tensor({0.9, 0.9, 0.1}), torch::tensor({true, false, true})),
              0.25 + 0.5 * 2.0 / 3, 1e-12);
  EXPECT_TRUE(std::isnan(average_precision(torch::tensor({0.5, 0.4}), torch::tensor({false, false}))));
}

TEST(ClassMetrics, BinnedCountsGiveTheExactApAndBalancedAccuracy) {
  // Five samples, three classes; predictions 0, 1, 0, 1, 1 for labels 0, 0, 0, 1, 2:
  // recalls 2/3, 1, 0.
  at::Tensor probs = torch::tensor(
      {{0.70, 0.20, 0.10}, {0.30, 0.60, 0.10}, {0.50, 0.30, 0.20}, {0.05, 0.90, 0.05}, {0.20, 0.45, 0.35}},
      torch::kDouble);
  at::Tensor labels = torch::tensor({0, 0, 0, 1, 2}, torch::kLong);
  // Counted in two batches, as ranks would.
  ClassCount count = count_classes(probs.narrow(0, 0, 2), labels.narrow(0, 0, 2), score_bins(3));
  count.add(count_classes(probs.narrow(0, 2, 3), labels.narrow(0, 2, 3), score_bins(3)));
  ClassMetrics m = class_metrics(count);
  EXPECT_NEAR(m.balanced_accuracy, (2.0 / 3 + 1 + 0) / 3, 1e-12);
  double sum = 0;
  for (int64_t c = 0; c < 3; ++c) {
    // No two of these scores share a 1/64-wide log-odds bin: the binned AP is exact.
    const double exact = average_precision(probs.select(1, c), labels == c);
    EXPECT_NEAR(m.ap[static_cast<size_t>(c)], exact, 1e-12) << "class " << c;
    sum += exact;
  }
  EXPECT_NEAR(m.map, sum / 3, 1e-12);
  // Class 0 by hand: ranked 0.70 (+), 0.50 (+), 0.30 (+), 0.20, 0.05: AP = 1.
  EXPECT_NEAR(m.ap[0], 1.0, 1e-12);
}

TEST(ClassMetrics, ManyClassesUseFewerBins) {
  EXPECT_EQ(score_bins(10), 2048);
  EXPECT_EQ(score_bins(1000), 262);
  EXPECT_EQ(score_bins(100000), 64);
}

}  // namespace
}  // namespace smoe::eval
