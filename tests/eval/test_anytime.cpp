#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/expect_error.h"
#include "eval/anytime.h"

namespace smoe::eval {
namespace {

// Three samples, two classes, two experts.
struct Case {
  at::Tensor base = torch::tensor({{0.9, 0.1}, {0.6, 0.4}, {0.45, 0.55}});
  at::Tensor gate = torch::tensor({{0.5, 0.5}, {0.8, 0.2}, {0.1, 0.9}});
  // expert outputs e'_k(y|x) [N, K, C]
  at::Tensor experts = torch::tensor({{{0.8, 0.2}, {0.7, 0.3}}, {{0.2, 0.8}, {0.9, 0.1}}, {{0.3, 0.7}, {0.6, 0.4}}});
  at::Tensor labels = torch::tensor({0, 1, 0}, torch::kLong);
  Costs costs{100, 2, {10, 30}, 1};
};

TEST(Anytime, TauZeroRunsEveryExpertTauOneExitsEverything) {
  Case c;
  Point all = anytime_point(c.base, c.gate, c.experts, c.labels, 0.0, c.costs);
  EXPECT_DOUBLE_EQ(all.early_exit_rate, 0.0);
  EXPECT_DOUBLE_EQ(all.mean_experts, 2.0);
  EXPECT_DOUBLE_EQ(all.macs, 100 + 2 + 10 + 30 + 2 * 1);
  Point none = anytime_point(c.base, c.gate, c.experts, c.labels, 1.0, c.costs);
  EXPECT_DOUBLE_EQ(none.early_exit_rate, 1.0);
  EXPECT_DOUBLE_EQ(none.mean_experts, 0.0);
  EXPECT_DOUBLE_EQ(none.macs, 102);
  EXPECT_DOUBLE_EQ(none.accuracy, base_point(c.base, c.labels, c.costs).accuracy);
}

TEST(Anytime, ThresholdRuleByHand) {
  Case c;
  // alpha = g * (1 - max phi):
  //   x0: (0.05, 0.05)   x1: (0.32, 0.08)   x2: (0.055, 0.495)
  Point p = anytime_point(c.base, c.gate, c.experts, c.labels, 0.1, c.costs);
  // x0 exits early (base: class 0, right); x1 runs expert 0 only -> 0.8*[0.2,0.8] -> class 1, right;
  // x2 runs expert 1 only -> class 0, right.
  EXPECT_DOUBLE_EQ(p.early_exit_rate, 1.0 / 3);
  EXPECT_DOUBLE_EQ(p.mean_experts, 2.0 / 3);
  EXPECT_DOUBLE_EQ(p.accuracy, 1.0);
  EXPECT_NEAR(p.macs, 102 + (0 + 11 + 31) / 3.0, 1e-9);
  // The base alone gets x1 and x2 wrong.
  EXPECT_NEAR(base_point(c.base, c.labels, c.costs).accuracy, 1.0 / 3, 1e-12);
  EXPECT_ERROR(anytime_point(c.base, c.gate, c.experts, c.labels, 1.5, c.costs), "tau must be in [0, 1], got 1.5");
}

TEST(Anytime, TopOneAndTopTwo) {
  Case c;
  Point t1 = top1_point(c.gate, c.experts, c.labels, c.costs, 1);
  // argmax gate: x0 -> expert 0 (tie, first), x1 -> 0, x2 -> 1
  EXPECT_DOUBLE_EQ(t1.accuracy, 1.0);
  EXPECT_NEAR(t1.macs, 100 + 2 + 1 + (10 + 10 + 30) / 3.0, 1e-9);
  Point t2 = top2_point(c.gate, c.experts, c.labels, c.costs);
  EXPECT_DOUBLE_EQ(t2.mean_experts, 2.0);
  EXPECT_DOUBLE_EQ(t2.macs, 100 + 2 + 40);
  // x1: 0.8*[0.2,0.8] + 0.2*[0.9,0.1] = [0.34, 0.66] -> class 1, right
  EXPECT_DOUBLE_EQ(t2.accuracy, 1.0);
}

TEST(Envelope, UpperHullFromCheapestToMostAccurate) {
  std::vector<Point> pts(6);
  double data[6][2] = {{1, 0.5}, {2, 0.8}, {3, 0.82}, {2.5, 0.6}, {4, 0.9}, {5, 0.85}};
  for (int i = 0; i < 6; ++i) {
    pts[i].macs = data[i][0];
    pts[i].accuracy = data[i][1];
  }
  auto hull = convex_envelope(pts);
  // (3, 0.82) lies under the segment (2, 0.8)-(4, 0.9); (5, 0.85) is past the best.
  EXPECT_EQ(hull, (std::vector<size_t>{0, 1, 4}));
}

}  // namespace
}  // namespace smoe::eval
