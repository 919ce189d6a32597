#include "cluster/kmeans.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/heartbeat.h"
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

KMeansResult kmeans(const at::Tensor& input, const KMeansOptions& o) {
  SMOE_CHECK(input.dim() == 2, "k-means: expected a matrix [n, d], got {} dimensions", input.dim());
  const int64_t n = input.size(0), d = input.size(1);
  SMOE_CHECK(o.k >= 1, "k-means: k must be at least 1, got {}", o.k);
  SMOE_CHECK(n >= o.k, "k-means: number of points ({}) should be at least k ({})", n, o.k);
  SMOE_CHECK(o.restarts >= 1 && o.max_iter >= 1, "k-means: restarts and max_iter must be at least 1");
  torch::NoGradGuard no_grad;
  at::Tensor x = input.to(torch::kFloat).contiguous();
  at::Tensor x_sq = x.pow(2).sum(1);
  // scikit-learn's tolerance: relative to the mean variance of the features.
  // (mean variance = (mean |x|^2 - |mean x|^2) / d, from the norms already computed)
  const double mean_var =
      (x_sq.to(torch::kDouble).mean().item<double>() - x.mean(0).to(torch::kDouble).pow(2).sum().item<double>()) /
      static_cast<double>(d);
  const double tol = o.tol * std::max(mean_var, 0.0);

  KMeansResult best;
  best.inertia = std::numeric_limits<double>::infinity();
  for (int64_t r = 0; r < o.restarts; ++r) {
    at::Tensor c = kmeans_plus_plus(x, o.k, derive_seed(o.seed, "kmeans++", {static_cast<uint64_t>(r)}));
    at::Tensor labels, previous, dist;
    KMeansStats stats;
    bool settled = false;  // labels (and so centroids) stopped changing
    for (int64_t it = 0; it < o.max_iter; ++it) {
      heartbeat::beat("k-means iteration");
      std::tie(labels, dist) = nearest_centroids(x, x_sq, c, o.block_rows);
      // Strict convergence: no point changed its cluster.
      if (previous.defined() && torch::equal(labels, previous)) {
        settled = true;
        break;
      }
      previous = labels;
      // M-step: centroids are the means of their points.
      // Few clusters: one matrix product with the one-hot assignment uses
      // every core; many clusters: a scatter-add of the rows is cheaper.
      at::Tensor sums;
      if (o.k <= 32) {
        sums = torch::zeros({o.k, n}, x.options()).scatter_(0, labels.unsqueeze(0), 1.0).mm(x);
      } else {
        sums = torch::zeros({o.k, d}, x.options());
        sums.index_add_(0, labels, x);
      }
      at::Tensor counts = torch::bincount(labels, {}, o.k).to(x.scalar_type());
      at::Tensor empty = (counts == 0).nonzero().flatten().cpu();
      if (empty.numel() > 0) {
        // An empty cluster takes the point farthest from its centroid.
        at::Tensor far = dist.argsort(0, /*descending=*/true).cpu();
        for (int64_t e = 0; e < empty.numel(); ++e) {
          int64_t j = empty[e].item<int64_t>(), p = far[e].item<int64_t>();
          sums[j] = x[p];
          counts[j] = 1;
        }
      }
      at::Tensor next = sums / counts.unsqueeze(1);
      const double shift = (next - c).pow(2).sum().item<double>();
      c = next;
      stats.iterations = it + 1;
      if (shift <= tol) break;
    }
    // Final E-step so that labels and inertia match the returned centroids
    // (already done when the labels settled).
    if (!settled) std::tie(labels, dist) = nearest_centroids(x, x_sq, c, o.block_rows);
    stats.inertia = dist.to(torch::kDouble).sum().item<double>();
    best.restarts.push_back(stats);
    if (stats.inertia < best.inertia) {
      best.inertia = stats.inertia;
      best.centroids = c;
      best.assign = labels;
      best.best_restart = r;
    }
  }
  return best;
}

}  // namespace smoe::cluster
