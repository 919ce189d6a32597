#include "cluster/kmeans.h"

#include <torch/torch.h>

#include <cmath>

#include "cluster/distributed_kmeans.h"
#include "comm/solo_communicator.h"
#include "core/rng.h"

namespace smoe::cluster {
// Nearest centroid of each row and its squared distance, block by block.
std::pair<at::Tensor, at::Tensor> nearest_centroids(const at::Tensor& x, const at::Tensor& x_sq, const at::Tensor& c,
                                                    int64_t block_rows) {
  const int64_t n = x.size(0);
  at::Tensor labels = torch::empty({n}, x.options().dtype(torch::kLong));
  at::Tensor dist = torch::empty({n}, x.options());
  at::Tensor c_sq = c.pow(2).sum(1);
  for (int64_t start = 0; start < n; start += block_rows) {
    const int64_t len = std::min(block_rows, n - start);
    at::Tensor xb = x.narrow(0, start, len);
    // |x|^2 + |c|^2 - 2 x c^T, clamped at 0 against rounding.
    at::Tensor d = torch::addmm(c_sq.unsqueeze(0), xb, c.t(), 1.0, -2.0).add_(x_sq.narrow(0, start, len).unsqueeze(1));
    auto [mn, idx] = d.min(1);
    dist.narrow(0, start, len).copy_(mn.clamp_min_(0));
    labels.narrow(0, start, len).copy_(idx);
  }
  return {labels, dist};
}

at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& c) {
  return squared_distances(x, x.pow(2).sum(1), c);
}

at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& x_sq, const at::Tensor& c) {
  at::Tensor d = torch::addmm(c.pow(2).sum(1).unsqueeze(0), x, c.t(), 1.0, -2.0);
  return d.add_(x_sq.unsqueeze(1)).clamp_min_(0);
}

at::Tensor kmeans_plus_plus(const at::Tensor& x, int64_t k, uint64_t seed) {
  const int64_t n = x.size(0);
  SplitMix64 rng(seed);
  const int64_t trials = 2 + static_cast<int64_t>(std::log(static_cast<double>(k)));
  at::Tensor x_sq = x.pow(2).sum(1);
  std::vector<int64_t> chosen = {static_cast<int64_t>(rng.below(static_cast<uint64_t>(n)))};
  // Squared distance of every point to its closest chosen centre [n]; the
  // potential's cumulative sum is taken in double precision.
  at::Tensor closest =
      squared_distances(x, x_sq, x.index_select(0, torch::tensor(chosen, torch::kLong).to(x.device()))).squeeze(1);
  std::vector<int64_t> cand(static_cast<size_t>(trials));
  for (int64_t c = 1; c < k; ++c) {
    at::Tensor cum = closest.to(torch::kDouble).cumsum(0).cpu();
    const double* cp = cum.data_ptr<double>();
    const double pot = cp[n - 1];
    for (auto& i : cand) {
      const double r = rng.uniform() * pot;
      i = std::min<int64_t>(std::upper_bound(cp, cp + n, r) - cp, n - 1);
    }
    // Distances of each candidate to every point [trials, n] (this
    // orientation of the skinny product runs twice as fast); keep the
    // candidate that lowers the potential most.
    at::Tensor cands = x.index_select(0, torch::tensor(cand, torch::kLong).to(x.device()));
    at::Tensor d =
        torch::addmm(x_sq.unsqueeze(0), cands, x.t(), 1.0, -2.0).add_(cands.pow(2).sum(1, true)).clamp_min_(0);
    at::Tensor candidate_closest = torch::minimum(d, closest.unsqueeze(0));
    const int64_t best = candidate_closest.sum(1, /*keepdim=*/false, torch::kDouble).argmin().item<int64_t>();
    chosen.push_back(cand[static_cast<size_t>(best)]);
    closest = candidate_closest.select(0, best).contiguous();
  }
  return x.index_select(0, torch::tensor(chosen, torch::kLong).to(x.device())).clone();
}

KMeansResult kmeans(const at::Tensor& x, const KMeansOptions& options) {
  // The distributed K-means on a group of one: one Lloyd loop for every
  // caller, and the same result as any number of ranks holding these rows.
  comm::SoloCommunicator solo;
  DistributedKMeansOptions o;
  o.kmeans = options;
  o.seeding_sample = std::max<int64_t>(o.seeding_sample, x.dim() == 2 ? x.size(0) : 0);  // seeded from every row
  return kmeans(x, torch::arange(x.dim() >= 1 ? x.size(0) : 0, torch::kLong), o, solo);
}

}  // namespace smoe::cluster
