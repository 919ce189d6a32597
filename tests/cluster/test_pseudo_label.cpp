// Pseudo-labels from a trusted subset (cluster/pseudo_label.h) on separable
// blobs: the unlabelled samples recover their class, tau is chosen by F1,
// and samples far from every trusted sample are outliers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cluster/pseudo_label.h"

namespace smoe::cluster {
namespace {

// Three Gaussian blobs in 8-D (labels 0, 1, 2), n per class.
std::pair<at::Tensor, at::Tensor> blobs(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor centres = torch::zeros({3, 8});
  for (int64_t c = 0; c < 3; ++c) centres[c][c] = 6.0;
  at::Tensor y = torch::arange(3 * n, torch::kLong) % 3;
  return {centres.index_select(0, y) + 0.7 * torch::randn({3 * n, 8}), y};
}

TEST(PseudoLabels, SeparableClassesAreRecoveredAndFarSamplesAreOutliers) {
  auto [trusted_x, trusted_y] = blobs(20, 1);  // 60 trusted samples
  auto [val_x, val_y] = blobs(10, 2);
  auto [x, y] = blobs(200, 3);  // the samples to label
  PseudoLabelOptions o;
  o.dim = 16;
  o.steps = 300;
  o.batch_size = 64;
  o.seed = 7;
  PseudoLabeler labeler(8, o);
  labeler.fit(trusted_x, trusted_y);
  const TauChoice tau = labeler.choose_tau(trusted_x, trusted_y, val_x, val_y);
  EXPECT_GT(tau.f1, 0.95);
  at::Tensor labels = labeler.label(x, trusted_x, trusted_y, tau.tau);
  EXPECT_GT((labels == y).to(torch::kDouble).mean().item<double>(), 0.95);

  // Far from every blob: less similar to the trusted samples than any blob sample.
  at::Tensor far = 40 * torch::ones({5, 8}) + torch::randn({5, 8});
  far.narrow(0, 1, 2).mul_(-1);
  at::Tensor sim_in = labeler.nearest(x, trusted_x, trusted_y).first;
  at::Tensor sim_far = labeler.nearest(far, trusted_x, trusted_y).first;
  EXPECT_LT(sim_far.max().item<double>(), sim_in.min().item<double>());
  const double threshold = (sim_far.max().item<double>() + sim_in.min().item<double>()) / 2;
  EXPECT_TRUE((labeler.label(far, trusted_x, trusted_y, threshold) == -1).all().item<bool>());
  EXPECT_TRUE((labeler.label(x, trusted_x, trusted_y, threshold) >= 0).all().item<bool>());
}

TEST(PseudoLabels, TheSameSeedGivesTheSameProjection) {
  auto [x, y] = blobs(10, 4);
  PseudoLabelOptions o;
  o.steps = 20;
  o.seed = 3;
  PseudoLabeler a(8, o), b(8, o);
  a.fit(x, y);
  b.fit(x, y);
  EXPECT_TRUE(torch::equal(a.project(x), b.project(x)));
}

}  // namespace
}  // namespace smoe::cluster
