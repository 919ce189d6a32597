#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cluster/gate_init.h"
#include "cluster/kmeans.h"
#include "common/expect_error.h"
#include "models/gate.h"

namespace smoe::cluster {
namespace {

// Three well separated blobs of 50 points in 2-D; labels 0, 1, 2.
std::pair<at::Tensor, at::Tensor> blobs() {
  torch::manual_seed(3);
  at::Tensor centres = torch::tensor({{0.0f, 0.0f}, {10.0f, 0.0f}, {0.0f, 10.0f}});
  at::Tensor labels = torch::arange(150, torch::kLong) % 3;
  at::Tensor x = centres.index_select(0, labels) + 0.5 * torch::randn({150, 2});
  return {x, labels};
}

TEST(KMeans, RecoversSeparableBlobs) {
  auto [x, labels] = blobs();
  KMeansOptions o;
  o.k = 3;
  o.seed = 11;
  KMeansResult r = kmeans(x, o);
  // Same partition as the true labels, up to renaming the clusters.
  for (int64_t c = 0; c < 3; ++c) {
    at::Tensor members = r.assign.masked_select(labels == c);
    EXPECT_TRUE((members == members[0]).all().item<bool>()) << "blob " << c << " split";
  }
  EXPECT_EQ(std::get<0>(at::_unique(r.assign)).numel(), 3);
  // Inertia equals the sum of squared distances to the returned centroids.
  double inertia = (x - r.centroids.index_select(0, r.assign)).pow(2).sum().item<double>();
  EXPECT_NEAR(r.inertia, inertia, 1e-3 * inertia);
  // Around 150 points x 2 dims x 0.25 variance.
  EXPECT_LT(r.inertia, 150 * 2 * 0.25 * 1.5);
  EXPECT_EQ(static_cast<int64_t>(r.restarts.size()), o.restarts);
  for (const auto& s : r.restarts) EXPECT_GE(s.inertia, r.inertia);
}

TEST(KMeans, DeterministicForASeedAndBlockSizeIndependent) {
  auto [x, labels] = blobs();
  KMeansOptions o;
  o.k = 5;
  o.seed = 2;
  KMeansResult a = kmeans(x, o);
  o.block_rows = 7;
  KMeansResult b = kmeans(x, o);
  EXPECT_TRUE(torch::equal(a.assign, b.assign));
  EXPECT_TRUE(torch::allclose(a.centroids, b.centroids));
}

TEST(KMeans, PlusPlusSeedsAreDistinctDataPoints) {
  auto [x, labels] = blobs();
  at::Tensor c = kmeans_plus_plus(x, 3, 5);
  for (int64_t i = 0; i < 3; ++i) EXPECT_EQ((x - c[i]).pow(2).sum(1).min().item<float>(), 0.0f);
  // With separated blobs, k-means++ puts one seed in each.
  at::Tensor d = squared_distances(c, c);
  EXPECT_GT(d.masked_select(~torch::eye(3, torch::kBool)).min().item<float>(), 25.0f);
}

TEST(KMeans, ChecksItsInput) {
  KMeansOptions o;
  o.k = 10;
  EXPECT_ERROR(kmeans(torch::randn({5, 2}), o), "number of points (5) should be at least k (10)");
  EXPECT_ERROR(kmeans(torch::randn({5}), o), "expected a matrix [n, d]");
}

TEST(InitialGate, SoftRowsSumToOneAndFollowDistances) {
  at::Tensor x = torch::tensor({{0.0f, 0.0f}, {1.0f, 0.0f}, {0.9f, 0.1f}});
  at::Tensor c = torch::tensor({{0.0f, 0.0f}, {1.0f, 0.0f}});
  at::Tensor g = soft_assignment(x, c, 0.5, false);
  EXPECT_TRUE(torch::allclose(g.sum(1), torch::ones({3})));
  // g0(k|x) = softmax(-d^2/T): for x0, d = (0, 1) -> softmax(0, -2)
  EXPECT_NEAR(g[0][0].item<float>(), 1.0 / (1.0 + std::exp(-2.0)), 1e-6);
  EXPECT_GT(g[2][1].item<float>(), g[2][0].item<float>());
  at::Tensor h = soft_assignment(x, c, 0.5, true);
  EXPECT_TRUE(torch::equal(h, torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {0.0f, 1.0f}})));
  // Lower temperature, sharper gate.
  EXPECT_GT(soft_assignment(x, c, 0.05, false)[0][0].item<float>(), g[0][0].item<float>());
  EXPECT_ERROR(soft_assignment(x, c, 0.0, false), "gate temperature must be positive");
}

TEST(InitialGate, PerClassClusteringRoutesByClass) {
  auto [x, labels] = blobs();
  // Six classes: 0/3 share blob 0, 1/4 blob 1, 2/5 blob 2.
  at::Tensor six = labels + 3 * (torch::arange(150) % 2);
  KMeansOptions o;
  o.k = 3;
  auto pc = cluster_classes(x, six, 6, o);
  EXPECT_EQ(pc.class_to_expert[0].item<int64_t>(), pc.class_to_expert[3].item<int64_t>());
  EXPECT_EQ(pc.class_to_expert[1].item<int64_t>(), pc.class_to_expert[4].item<int64_t>());
  EXPECT_NE(pc.class_to_expert[0].item<int64_t>(), pc.class_to_expert[1].item<int64_t>());
  at::Tensor g0 = class_assignment(six, pc.class_to_expert, 3);
  EXPECT_TRUE(torch::equal(g0.argmax(1), pc.class_to_expert.index_select(0, six)));
  // The per-class gate routes by class probabilities: it sums the probability of each expert's classes.
  models::ClassRoutingGateImpl gate(6, 3);
  gate.class_to_expert.copy_(pc.class_to_expert);
  models::GateFeatures f{torch::zeros({1, 4}), torch::zeros({1, 6})};  // uniform class probabilities
  EXPECT_TRUE(torch::allclose(gate.probabilities(f), torch::full({1, 3}, 1.0f / 3)));
  o.k = 7;
  EXPECT_ERROR(cluster_classes(x, six, 6, o), "7 experts for 6 classes");
}

}  // namespace
}  // namespace smoe::cluster
