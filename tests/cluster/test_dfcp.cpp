// DFCP-MoE's double-stage clustering (cluster/dfcp.h) on cases small enough
// to check by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cluster/dfcp.h"
#include "cluster/initial_gate.h"
#include "comm/thread_communicator.h"

namespace smoe::cluster {
namespace {

TEST(Dfcp, ReferenceClustersAreTheMostNamedNeighbours) {
  // 1-D centroids 0, 1, 2, 10, 11, 21; each names its 2 nearest:
  // 0 -> {1, 2}, 1 -> {0, 2}, 2 -> {1, 0}, 10 -> {11, 2}, 11 -> {10, 2}, 21 -> {11, 10}.
  // Votes: 2, 2, 4, 2, 2, 0. K = 2: cluster 2, then the largest of the ties (3).
  at::Tensor c = torch::tensor({0.0f, 1.0f, 2.0f, 10.0f, 11.0f, 21.0f}).unsqueeze(1);
  at::Tensor sizes = torch::tensor({5, 6, 7, 9, 8, 30}, torch::kLong);
  auto [refs, votes] = reference_clusters(c, sizes, 2, 2);
  EXPECT_TRUE(torch::equal(votes, torch::tensor({2, 2, 4, 2, 2, 0}, torch::kLong))) << votes;
  EXPECT_TRUE(torch::equal(refs, torch::tensor({2, 3}, torch::kLong))) << refs;
}

TEST(Dfcp, RowsJoinTheNearestReferenceUnderTheThreshold) {
  at::Tensor refs = torch::tensor({{0.0f, 0.0f}, {10.0f, 0.0f}});
  at::Tensor x = torch::tensor({{1.0f, 0.0f}, {9.0f, 1.0f}, {5.0f, 0.0f}, {0.0f, 2.9f}, {0.0f, 3.1f}});
  at::Tensor a = assign_to_references(x, refs, 3.0);
  EXPECT_TRUE(torch::equal(a, torch::tensor({0, 1, -1, 0, -1}, torch::kLong))) << a;
}

// Three tight blobs of 60 rows in 2-D and 6 far, scattered outliers.
std::pair<at::Tensor, at::Tensor> blobs_with_outliers() {
  torch::manual_seed(7);
  at::Tensor centres = torch::tensor({{0.0f, 0.0f}, {8.0f, 0.0f}, {0.0f, 8.0f}});
  at::Tensor labels = torch::arange(180, torch::kLong) % 3;
  at::Tensor x = centres.index_select(0, labels) + 0.5 * torch::randn({180, 2});
  at::Tensor far =
      torch::tensor({{4.0f, 4.0f}, {-5.0f, 3.5f}, {4.0f, -4.5f}, {12.0f, 4.0f}, {-4.0f, -4.0f}, {4.0f, 12.0f}});
  return {torch::cat({x, far}), torch::cat({labels, torch::full({6}, -1, torch::kLong)})};
}

TEST(Dfcp, RecoversBlobsFlagsOutliersAndIsTheSameOnAnyRankCount) {
  auto [x, truth] = blobs_with_outliers();
  const int64_t n = x.size(0);
  KMeansOptions ko;
  ko.k = 3;
  ko.seed = 5;
  DfcpOptions o;
  o.k_max = 5;
  o.min_coverage = 0.9;
  std::vector<at::Tensor> assigns;
  std::vector<std::string> records;
  for (int ranks : {1, 2, 3}) {
    at::Tensor full = torch::empty({n}, torch::kLong);
    nlohmann::json record;
    comm::run_ranks(ranks, [&](comm::Communicator& c) {
      const int64_t from = n * c.rank() / ranks, to = n * (c.rank() + 1) / ranks;
      DfcpResult r = dfcp_cluster(x.narrow(0, from, to - from), torch::arange(from, to, torch::kLong), ko, o, c);
      full.narrow(0, from, to - from).copy_(r.assign);
      if (c.rank() == 0) record = r.record;
    });
    assigns.push_back(full);
    records.push_back(record.dump());
  }
  EXPECT_TRUE(torch::equal(assigns[1], assigns[0]));
  EXPECT_TRUE(torch::equal(assigns[2], assigns[0]));
  EXPECT_EQ(records[1], records[0]);
  EXPECT_EQ(records[2], records[0]);
  at::Tensor a = assigns[0];
  // Every outlier is flagged; every blob is one cluster, a different one each.
  EXPECT_TRUE((a.narrow(0, 180, 6) == -1).all().item<bool>()) << a.narrow(0, 180, 6);
  std::set<int64_t> seen;
  for (int64_t b = 0; b < 3; ++b) {
    at::Tensor members = a.narrow(0, 0, 180).masked_select(truth.narrow(0, 0, 180) == b);
    const int64_t first = members[0].item<int64_t>();
    EXPECT_GE(first, 0);
    EXPECT_GT((members == first).sum().item<int64_t>(), 55) << "blob " << b;
    seen.insert(first);
  }
  EXPECT_EQ(seen.size(), 3u);
  auto record = nlohmann::json::parse(records[0]);
  EXPECT_EQ(record["stage1"].size(), 3u);  // K1 = 3, 4, 5 tried
  EXPECT_GE(record["coverage"].get<double>(), 0.9);
}

}  // namespace
}  // namespace smoe::cluster
