// Cluster-quality scores on cases small enough to compute by hand (the
// comparison with scikit-learn on larger data is test_quality_sklearn.py).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "cluster/quality.h"
#include "comm/thread_communicator.h"

namespace smoe::cluster {
namespace {

// Clusters {0, 1}, {2, 3}; labels 0, 1, 1, 1: table [[1, 1], [0, 2]].
const at::Tensor kAssign = torch::tensor({0, 0, 1, 1}, torch::kLong);
const at::Tensor kLabels = torch::tensor({0, 1, 1, 1}, torch::kLong);

TEST(ClusterQuality, ContingencyPurityNmiAriByHand) {
  at::Tensor t = contingency(kAssign, kLabels, 2, 2);
  EXPECT_TRUE(torch::equal(t, torch::tensor({{1, 1}, {0, 2}}, torch::kLong)));
  EXPECT_DOUBLE_EQ(purity(t), 3.0 / 4);
  auto per = cluster_purity(t);
  EXPECT_DOUBLE_EQ(per[0], 0.5);
  EXPECT_DOUBLE_EQ(per[1], 1.0);
  // MI = sum p_ij ln(p_ij / (p_i p_j)); H(U) = ln 2; H(V) of (1/4, 3/4).
  const double mi =
      0.25 * std::log(0.25 / (0.5 * 0.25)) + 0.25 * std::log(0.25 / (0.5 * 0.75)) + 0.5 * std::log(0.5 / (0.5 * 0.75));
  const double hu = std::log(2.0), hv = -(0.25 * std::log(0.25) + 0.75 * std::log(0.75));
  EXPECT_NEAR(normalized_mutual_info(t), mi / ((hu + hv) / 2), 1e-12);
  // Pairs together in both: 1 (the two 1s of cluster 1); sum C(a,2) = 2,
  // sum C(b,2) = 3, expected = 2 * 3 / C(4,2) = 1: ARI = (1 - 1) / (2.5 - 1) = 0.
  EXPECT_NEAR(adjusted_rand_index(t), 0.0, 1e-12);
  // Identical partitions score 1; outliers (-1) are not counted.
  at::Tensor same = contingency(torch::tensor({1, 1, 0, -1}, torch::kLong), torch::tensor({0, 0, 1, 1}), 2, 2);
  EXPECT_EQ(same.sum().item<int64_t>(), 3);
  EXPECT_DOUBLE_EQ(purity(same), 1.0);
  EXPECT_NEAR(normalized_mutual_info(same), 1.0, 1e-12);
  EXPECT_NEAR(adjusted_rand_index(same), 1.0, 1e-12);
}

TEST(ClusterQuality, DaviesBouldinAndSilhouetteByHand) {
  // 1-D clusters {0, 2} and {10, 12}: means 1 and 11, s = 1 each, d = 10:
  // DBI = (2/10 + 2/10) / 2. Silhouettes: a = 2 everywhere, b = 11, 9, 9, 11.
  at::Tensor x = torch::tensor({0.0f, 2.0f, 10.0f, 12.0f}).unsqueeze(1);
  EXPECT_NEAR(davies_bouldin(x, kAssign, 2), 0.2, 1e-12);
  EXPECT_NEAR(silhouette(x, kAssign, 2), (9.0 / 11 + 7.0 / 9) / 2, 1e-12);
  // One cluster: no silhouette; a singleton scores 0.
  EXPECT_TRUE(std::isnan(silhouette(x, torch::zeros({4}, torch::kLong), 2)));
  at::Tensor singleton = torch::tensor({0, 0, 0, 1}, torch::kLong);
  const double a0 = (2.0 + 10) / 2, b0 = 12, a1 = (2.0 + 8) / 2, b1 = 10, a2 = (10.0 + 8) / 2, b2 = 2;
  EXPECT_NEAR(silhouette(x, singleton, 2), ((b0 - a0) / b0 + (b1 - a1) / b1 + (b2 - a2) / a2 + 0) / 4, 1e-12);
}

TEST(ClusterQuality, CollectiveScoresAreTheSameOnAnyRankCount) {
  torch::manual_seed(4);
  at::Tensor x = torch::randn({301, 5});
  at::Tensor labels = torch::randint(0, 4, {301}, torch::kLong);
  at::Tensor assign = (labels + (torch::rand({301}) < 0.2).to(torch::kLong)) % 3;
  assign.index_put_({torch::arange(0, 301, 17)}, -1);
  std::vector<std::string> dumps;
  for (int ranks : {1, 2, 3}) {
    nlohmann::json q;
    comm::run_ranks(ranks, [&](comm::Communicator& c) {
      const int64_t from = 301 * c.rank() / ranks, to = 301 * (c.rank() + 1) / ranks;
      auto mine = cluster_quality(x.narrow(0, from, to - from), torch::arange(from, to, torch::kLong),
                                  assign.narrow(0, from, to - from), labels.narrow(0, from, to - from), 3, 4, c);
      if (c.rank() == 0) q = mine;
    });
    dumps.push_back(q.dump());
  }
  EXPECT_EQ(dumps[1], dumps[0]);
  EXPECT_EQ(dumps[2], dumps[0]);
  auto q = nlohmann::json::parse(dumps[0]);
  EXPECT_EQ(q["outliers"], 18);
  EXPECT_NEAR(q["davies_bouldin"].get<double>(), davies_bouldin(x.index({assign >= 0}), assign.index({assign >= 0}), 3),
              1e-5);
}

}  // namespace
}  // namespace smoe::cluster
