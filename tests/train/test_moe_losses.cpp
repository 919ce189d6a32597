// Krishnamurthy et al.'s regularisers (train/moe_losses.h): their values
// against sums written out by hand on tiny batches, gradients that reach
// the gate, and the per-row gradients that data-parallel training uses
// against autograd on the whole batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "models/gate.h"
#include "models/joint_moe.h"
#include "train/moe_losses.h"

namespace smoe::train {
namespace {

// P for B = 3 samples, K = 2 experts.
at::Tensor tiny_probs() { return torch::tensor({{0.5, 0.5}, {0.9, 0.1}, {0.2, 0.8}}, torch::kDouble); }

TEST(MoeLosses, ImportanceIsWTimesTheSquaredCoefficientOfVariation) {
  // I = (1.6, 1.4): mean 1.5, unbiased std sqrt(0.1^2 + 0.1^2) = 0.1414; CV^2 = 0.02 / 2.25.
  EXPECT_NEAR(importance_loss(tiny_probs(), 0.5).item<double>(), 0.5 * 0.02 / 2.25, 1e-12);
  double value = 0, balance = 0;
  usage_grad(tiny_probs(), 0.5, 0.3, &value, &balance);
  EXPECT_NEAR(value, 0.5 * 0.02 / 2.25, 1e-12);
  // L_bal: u = (1.6, 1.4), deviations from the mean +-0.1.
  EXPECT_NEAR(balance, 0.3 * 0.01, 1e-12);
  EXPECT_NEAR(load_balance_loss(tiny_probs(), 0.3).item<double>(), 0.3 * 0.01, 1e-12);
  // Balanced importance costs nothing; one expert has no variation.
  EXPECT_NEAR(importance_loss(torch::full({4, 2}, 0.5, torch::kDouble), 1.0).item<double>(), 0.0, 1e-15);
  EXPECT_EQ(importance_loss(torch::ones({4, 1}, torch::kDouble), 1.0).item<double>(), 0.0);
}

TEST(MoeLosses, SimilarityIsTheTraceAndOffDiagonalOfPtDPOverBSquared) {
  at::Tensor x = torch::tensor({{0.0, 0.0}, {1.0, 0.0}, {0.0, 2.0}}, torch::kDouble);
  at::Tensor d = pairwise_sq_distances(x, x);
  // |x0-x1|^2 = 1, |x0-x2|^2 = 4, |x1-x2|^2 = 5.
  EXPECT_TRUE(torch::allclose(d, torch::tensor({{0.0, 1.0, 4.0}, {1.0, 0.0, 5.0}, {4.0, 5.0, 0.0}}, torch::kDouble)));
  d = d / 5.0;  // normalised by the batch maximum
  const auto p = tiny_probs();
  auto P = [&](int i, int k) { return p[i][k].item<double>(); };
  auto D = [&](int i, int j) { return d[i][j].item<double>(); };
  // M_kl = sum_ij P_ik D_ij P_jl / B^2, written out.
  double m[2][2] = {{0, 0}, {0, 0}};
  for (int k = 0; k < 2; ++k)
    for (int l = 0; l < 2; ++l)
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) m[k][l] += P(i, k) * D(i, j) * P(j, l) / 9.0;
  const double tr = m[0][0] + m[1][1], off = m[0][1] + m[1][0];
  const double bs = 0.3, bd = 0.7;
  const double expected = bs * tr / 2 - bd * off / (4 - 2);
  EXPECT_NEAR(similarity_loss(p, d, bs, bd).item<double>(), expected, 1e-12);
  // Rows of P sum to 1, so sum(M) = sum(D) / B^2 whatever the gate does.
  EXPECT_NEAR(tr + off, d.sum().item<double>() / 9.0, 1e-12);
}

TEST(MoeLosses, RowGradientsEqualAutogradOnTheWholeBatch) {
  torch::manual_seed(3);
  const int64_t B = 10, K = 4;
  at::Tensor logits = torch::randn({B, K}, torch::kDouble).requires_grad_(true);
  at::Tensor x = torch::randn({B, 6}, torch::kDouble);
  at::Tensor d = pairwise_sq_distances(x, x);
  d = d / d.max();
  const double w = 0.4, lambda = 0.7, bs = 0.05, bd = 0.02;
  at::Tensor p = torch::softmax(logits, 1);
  (importance_loss(p, w) + load_balance_loss(p, lambda) + similarity_loss(p, d, bs, bd)).backward();
  at::Tensor expected = logits.grad().clone();

  // As two ranks would: rows [0, 6) and [6, 10), each with the whole batch's P.
  logits.mutable_grad().zero_();
  at::Tensor p2 = torch::softmax(logits, 1);
  double imp = 0, bal = 0, part_a = 0, part_b = 0;
  at::Tensor gi = usage_grad(p2, w, lambda, &imp, &bal);
  at::Tensor ga = similarity_grad_rows(d.narrow(0, 0, 6), p2, p2.narrow(0, 0, 6), bs, bd, &part_a) + gi;
  at::Tensor gb = similarity_grad_rows(d.narrow(0, 6, 4), p2, p2.narrow(0, 6, 4), bs, bd, &part_b) + gi;
  ((p2.narrow(0, 0, 6) * ga).sum() + (p2.narrow(0, 6, 4) * gb).sum()).backward();
  EXPECT_TRUE(torch::allclose(logits.grad(), expected, 1e-9, 1e-12)) << logits.grad() - expected;
  EXPECT_NEAR(part_a + part_b, similarity_loss(p2, d, bs, bd).item<double>(), 1e-12);
  EXPECT_NEAR(imp, importance_loss(p2, w).item<double>(), 1e-12);
  EXPECT_NEAR(bal, load_balance_loss(p2, lambda).item<double>(), 1e-12);
}

TEST(MoeLosses, DiversityIsTheMeanPairwiseCosineOfTheExpertsMeanOutputs) {
  // m_0 = (1, 0), m_1 = (0, 1), m_2 = (1, 1) / 2 (sums over 1, 1 and 2 samples):
  // cos(m0, m1) = 0, cos(m0, m2) = cos(m1, m2) = 1 / sqrt(2).
  at::Tensor sums = torch::tensor({{1.0, 0.0}, {0.0, 1.0}, {1.0, 1.0}}, torch::kDouble);
  at::Tensor counts = torch::tensor({1.0, 1.0, 2.0}, torch::kDouble);
  EXPECT_NEAR(diversity_loss(sums, counts, 0.5).item<double>(), 0.5 * (2 / std::sqrt(2.0)) / 3, 1e-12);
  // Through the per-sample surrogate, the experts get autograd's gradient of the whole batch's loss.
  torch::manual_seed(12);
  at::Tensor logits = torch::randn({7, 3, 4}, torch::kDouble).requires_grad_(true);
  at::Tensor routed = (torch::rand({7, 3}) > 0.3).to(torch::kDouble);
  at::Tensor probs = torch::softmax(logits, 2) * routed.unsqueeze(2);
  diversity_loss(probs.sum(0), routed.sum(0), 0.8).backward();
  at::Tensor expected = logits.grad().clone();
  logits.mutable_grad().zero_();
  double value = 0;
  at::Tensor g = diversity_grad(probs.sum(0).detach(), routed.sum(0), 0.8, &value);
  ((torch::softmax(logits, 2) * routed.unsqueeze(2)) * g.unsqueeze(0)).sum().backward();
  EXPECT_TRUE(torch::allclose(logits.grad(), expected, 1e-9, 1e-12));
  EXPECT_GT(expected.abs().sum().item<double>(), 0.0);
}

TEST(MoeLosses, EveryRegulariserTrainsTheGate) {
  // The gate's parameters get a non-zero gradient from each regulariser
  // alone: a regulariser computed on detached gate outputs (as in some
  // public code) would leave them at zero and fail here.
  torch::manual_seed(1);
  models::GateSpec g;
  g.experts = 3;
  g.input = {1, 8, 8};
  g.width = 2;
  g.hidden = {6, 5};
  models::Gate gate = models::gate_kinds().get("cnn")(g);
  at::Tensor images = torch::randn({12, 1, 8, 8});
  at::Tensor d = pairwise_sq_distances(images.flatten(1), images.flatten(1));
  d = d / d.max();
  for (int which = 0; which < 3; ++which) {
    gate->zero_grad();
    models::GateFeatures f;
    f.inputs = images;
    at::Tensor p = gate->probabilities(f);
    at::Tensor loss = which == 0   ? importance_loss(p, 1.0)
                      : which == 1 ? load_balance_loss(p, 1.0)
                                   : similarity_loss(p, d, 1.0, 1.0);
    loss.backward();
    double norm = 0;
    for (auto& t : gate->parameters()) norm += t.grad().defined() ? t.grad().abs().sum().item<double>() : 0.0;
    EXPECT_GT(norm, 0.0) << (which == 0 ? "importance" : which == 1 ? "load balance" : "similarity");
  }
}

}  // namespace
}  // namespace smoe::train
