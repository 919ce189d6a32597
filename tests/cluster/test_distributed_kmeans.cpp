// cluster/distributed_kmeans.h: the same centroids and inertia, bit for bit,
// on 1, 2 and 3 ranks and for any split of the rows, and on one process
// (kmeans.h's kmeans); a sound clustering from a sample's seeds
// (scikit-learn's inertia within 1 % is bench/kmeans_vs_sklearn.py --ranks 2).
#include "cluster/distributed_kmeans.h"
#include "cluster/initial_gate.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <mutex>

#include "comm/thread_communicator.h"
#include "common/expect_error.h"

namespace smoe::cluster {
namespace {

// 8 Gaussian blobs in 16 dimensions, 2,000 points.
at::Tensor blobs(int64_t n = 2000) {
  torch::manual_seed(21);
  at::Tensor centres = 4 * torch::randn({8, 16});
  at::Tensor which = torch::randint(8, {n}, torch::kLong);
  return centres.index_select(0, which) + torch::randn({n, 16});
}

// Rank r's ids under a split: contiguous ranges, round-robin, or batches of 7.
std::vector<int64_t> ids_of(int64_t n, int rank, int ranks, int split) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t owner = split == 0 ? i * ranks / n : split == 1 ? i % ranks : (i / 7) % ranks;
    if (owner == rank) ids.push_back(i);
  }
  return ids;
}

struct Outcome {
  at::Tensor centroids;
  at::Tensor assign;  // [n], reassembled from the ranks
  double inertia = 0;
  std::vector<KMeansStats> restarts;
};

Outcome run(const at::Tensor& x, int ranks, int split, const DistributedKMeansOptions& o) {
  Outcome out;
  out.assign = torch::full({x.size(0)}, int64_t{-1}, torch::kLong);
  std::mutex m;
  comm::run_ranks(ranks, [&](comm::Communicator& c) {
    at::Tensor ids = torch::tensor(ids_of(x.size(0), c.rank(), ranks, split), torch::kLong);
    KMeansResult r = kmeans(x.index_select(0, ids), ids, o, c);
    std::lock_guard<std::mutex> lock(m);
    out.assign.index_copy_(0, ids, r.assign);
    if (c.rank() == 0) {
      out.centroids = r.centroids;
      out.inertia = r.inertia;
      out.restarts = r.restarts;
    } else {
      EXPECT_TRUE(torch::equal(r.centroids, out.centroids.defined() ? out.centroids : r.centroids));
    }
  });
  return out;
}

DistributedKMeansOptions options(int64_t sample) {
  DistributedKMeansOptions o;
  o.kmeans.k = 8;
  o.kmeans.restarts = 2;
  o.kmeans.seed = 5;
  o.kmeans.block_rows = 256;
  o.seeding_sample = sample;
  return o;
}

TEST(DistributedKMeans, SameCentroidsOnAnyRankCountAndSplit) {
  at::Tensor x = blobs();
  for (int64_t sample : {int64_t{65536}, int64_t{500}}) {  // the whole data, and a sample of about 500 rows
    const auto o = options(sample);
    Outcome one = run(x, 1, 0, o);
    for (int ranks : {2, 3})
      for (int split : {0, 1, 2}) {
        Outcome many = run(x, ranks, split, o);
        EXPECT_TRUE(torch::equal(many.centroids, one.centroids)) << ranks << " ranks, split " << split;
        EXPECT_EQ(many.inertia, one.inertia) << ranks << " ranks, split " << split;
        EXPECT_TRUE(torch::equal(many.assign, one.assign));
        ASSERT_EQ(many.restarts.size(), one.restarts.size());
        for (size_t r = 0; r < one.restarts.size(); ++r)
          EXPECT_EQ(many.restarts[r].iterations, one.restarts[r].iterations);
      }
    // Every row is assigned to its nearest centroid, and the inertia is their sum.
    at::Tensor d = squared_distances(x, one.centroids);
    EXPECT_TRUE(torch::equal(one.assign, d.argmin(1)));
    EXPECT_NEAR(one.inertia, std::get<0>(d.min(1)).to(torch::kDouble).sum().item<double>(), 1e-4 * one.inertia);
  }
}

// One process holding every row (kmeans.h's kmeans) runs the same Lloyd
// loop on a group of one: the result of any number of ranks, bit for bit,
// once the seeding sample holds every row.
TEST(DistributedKMeans, TheSingleProcessKMeansIsTheDistributedOneOnOneRank) {
  at::Tensor x = blobs();
  auto o = options(65536);
  KMeansResult single = kmeans(x, o.kmeans);
  Outcome dist = run(x, 2, 1, o);
  EXPECT_TRUE(torch::equal(single.centroids, dist.centroids));
  EXPECT_TRUE(torch::equal(single.assign, dist.assign));
  EXPECT_EQ(single.inertia, dist.inertia);
  // Seeded from a sample of about 300 rows: still the blobs' optimum within 1 %.
  Outcome sampled = run(x, 3, 2, options(300));
  EXPECT_NEAR(sampled.inertia, single.inertia, 1e-2 * single.inertia);
}

TEST(DistributedKMeans, EmptyRanksAndBadInputs) {
  at::Tensor x = blobs(40);
  auto o = options(65536);
  // Five ranks for 40 rows split in batches of 7: rank 4 holds 5 rows, a sixth rank none.
  Outcome one = run(x, 1, 2, o);
  Outcome six = run(x, 6, 2, o);
  EXPECT_TRUE(torch::equal(six.centroids, one.centroids));
  o.kmeans.k = 41;
  comm::run_ranks(2, [&](comm::Communicator& c) {
    at::Tensor ids = torch::tensor(ids_of(40, c.rank(), 2, 0), torch::kLong);
    EXPECT_ERROR(kmeans(x.index_select(0, ids), ids, o, c), "k-means: number of points (40) should be at least k (41)");
  });
}

// The initial gates run collectively: each rank's g0 rows, put back in id
// order, equal the one-rank result bit for bit, for both strategies.
TEST(InitialGates, CollectiveFitIsTheSameOnAnyRankCount) {
  at::Tensor x = blobs(600);
  at::Tensor labels = torch::arange(600, torch::kLong) % 6;
  for (const std::string method : {"kmeans", "per_class"}) {
    at::Tensor reference;
    for (int ranks : {1, 3}) {
      at::Tensor g0 = torch::zeros({600, 3});
      std::mutex m;
      comm::run_ranks(ranks, [&](comm::Communicator& c) {
        at::Tensor ids = torch::tensor(ids_of(600, c.rank(), ranks, 2), torch::kLong);
        InitialGateInputs in;
        in.embedding = x.index_select(0, ids);
        in.labels = labels.index_select(0, ids);
        in.ids = ids;
        in.comm = &c;
        in.num_classes = 6;
        in.kmeans.k = 3;
        in.kmeans.seed = 9;
        InitialGateFit fit = initial_gates().get(method)->fit(in);
        std::lock_guard<std::mutex> lock(m);
        g0.index_copy_(0, ids, fit.g0);
      });
      EXPECT_TRUE(torch::allclose(g0.sum(1), torch::ones({600}))) << method;
      if (!reference.defined())
        reference = g0;
      else
        EXPECT_TRUE(torch::equal(g0, reference)) << method << " on " << ranks << " ranks";
    }
  }
}

}  // namespace
}  // namespace smoe::cluster
