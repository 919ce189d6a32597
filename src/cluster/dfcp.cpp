#include "cluster/dfcp.h"

#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "cluster/distributed_kmeans.h"
#include "cluster/gate_init.h"
#include "cluster/quality.h"
#include "core/error.h"
#include "core/log.h"

namespace smoe::cluster {
namespace {

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(torch::kLong).cpu().contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

std::pair<at::Tensor, at::Tensor> reference_clusters(const at::Tensor& centroids, const at::Tensor& sizes_in, int64_t K,
                                                     int64_t neighbours) {
  const int64_t K1 = centroids.size(0);
  SMOE_CHECK(K >= 1 && K <= K1, "dfcp: {} reference clusters among {}", K, K1);
  at::Tensor c = centroids.to(torch::kDouble).cpu();
  at::Tensor d = torch::cdist(c, c);
  d.fill_diagonal_(std::numeric_limits<double>::infinity());
  const int64_t m = std::min(neighbours, K1 - 1);
  at::Tensor votes = torch::zeros({K1}, torch::kLong);
  if (m > 0) {
    at::Tensor nearest = std::get<1>(d.topk(m, 1, /*largest=*/false, /*sorted=*/true));
    votes = torch::bincount(nearest.reshape(-1), {}, K1).to(torch::kLong);
  }
  std::vector<int64_t> order(static_cast<size_t>(K1));
  std::iota(order.begin(), order.end(), 0);
  const std::vector<int64_t> v = to_vector(votes), sizes = to_vector(sizes_in);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (v[a] != v[b]) return v[a] > v[b];
    return sizes[a] > sizes[b];
  });
  order.resize(static_cast<size_t>(K));
  std::sort(order.begin(), order.end());
  return {torch::tensor(order, torch::kLong), votes};
}

at::Tensor assign_to_references(const at::Tensor& x, const at::Tensor& references, double threshold) {
  torch::NoGradGuard no_grad;
  if (x.size(0) == 0) return torch::zeros({0}, torch::kLong);
  auto [d2, nearest] = rowwise_squared_distances(x, references).min(1);
  return torch::where(d2.sqrt() < threshold, nearest, torch::full_like(nearest, -1));
}

DfcpResult dfcp_cluster(const at::Tensor& x_in, const at::Tensor& ids, const KMeansOptions& kmeans_options,
                        const DfcpOptions& o, comm::Communicator& comm) {
  torch::NoGradGuard no_grad;
  const int64_t K = kmeans_options.k;
  const int64_t k_max = o.k_max > 0 ? o.k_max : 2 * K;
  SMOE_CHECK(k_max >= K, "config key 'cluster.dfcp.k_max' is {} but experts.count is {}: stage 1 needs k_max >= K",
             k_max, K);
  SMOE_CHECK(!o.thetas.empty(), "config key 'cluster.dfcp.thetas' is empty");
  for (double t : o.thetas)
    SMOE_CHECK(t > 0, "config key 'cluster.dfcp.thetas': every threshold must be > 0, got {}", t);
  at::Tensor x = x_in.to(torch::kFloat).contiguous();
  int64_t n = x.size(0);
  comm.allreduce(comm::host_buffer(&n, 1), comm::ReduceOp::sum);
  SMOE_CHECK(n >= k_max, "dfcp: stage 1 needs at least k_max = {} rows, got {}", k_max, n);

  // Stage 1: K-means over K1 = K .. k_max, scored by DBI.
  nlohmann::json stage1 = nlohmann::json::array();
  KMeansResult best;
  double best_dbi = std::numeric_limits<double>::infinity();
  for (int64_t k1 = K; k1 <= k_max; ++k1) {
    DistributedKMeansOptions ko;
    ko.kmeans = kmeans_options;
    ko.kmeans.k = k1;
    KMeansResult km = kmeans(x, ids, ko, comm);
    const double dbi = davies_bouldin(x, km.assign, k1, comm);
    stage1.push_back({{"k", k1}, {"davies_bouldin", dbi}, {"inertia", km.inertia}});
    if (dbi < best_dbi) best_dbi = dbi, best = std::move(km);
  }
  const int64_t K1 = best.centroids.size(0);
  const ClusterMoments m1 = cluster_moments(x, best.assign, K1, comm);

  // Stage 2: the reference clusters, then the threshold sweep.
  auto [refs, votes] = reference_clusters(best.centroids, m1.sizes, K, o.neighbours);
  at::Tensor ref_centroids = best.centroids.index_select(0, refs);
  const double radius = m1.scatter.index_select(0, refs).mean().item<double>();
  nlohmann::json sweep = nlohmann::json::array();
  int64_t chosen = -1;
  double chosen_dbi = std::numeric_limits<double>::infinity();
  for (size_t t = 0; t < o.thetas.size(); ++t) {
    at::Tensor a = assign_to_references(x, ref_centroids, o.thetas[t] * radius);
    int64_t kept = (a >= 0).sum().item<int64_t>();
    comm.allreduce(comm::host_buffer(&kept, 1), comm::ReduceOp::sum);
    const double coverage = static_cast<double>(kept) / static_cast<double>(n);
    const double dbi = davies_bouldin(x, a, K, comm);
    sweep.push_back({{"theta", o.thetas[t]}, {"coverage", coverage}, {"davies_bouldin", dbi}});
    if (coverage >= o.min_coverage && dbi < chosen_dbi) chosen = static_cast<int64_t>(t), chosen_dbi = dbi;
  }
  if (chosen < 0)  // no threshold keeps enough rows: the most inclusive one
    chosen = std::max_element(o.thetas.begin(), o.thetas.end()) - o.thetas.begin();
  const double theta = o.thetas[static_cast<size_t>(chosen)];
  DfcpResult r;
  r.assign = assign_to_references(x, ref_centroids, theta * radius);
  const ClusterMoments final_moments = cluster_moments(x, r.assign, K, comm);
  // A reference that kept no row keeps its stage-1 centroid.
  r.centroids = torch::where((final_moments.sizes > 0).unsqueeze(1), final_moments.means, ref_centroids);
  r.record = {{"stage1", stage1},
              {"stage1_k", K1},
              {"references", to_vector(refs)},
              {"votes", to_vector(votes)},
              {"radius", radius},
              {"stage2", sweep},
              {"theta", theta},
              {"coverage", sweep[static_cast<size_t>(chosen)]["coverage"]},
              {"outliers", n - final_moments.sizes.sum().item<int64_t>()},
              {"cluster_sizes", to_vector(final_moments.sizes)}};
  log::info("cluster   dfcp: stage 1 K1 = {} (DBI {:.3f}), references [{}], theta {} x radius {:.3g}: coverage {:.3f}",
            K1, best_dbi, fmt::join(to_vector(refs), ", "), theta, radius,
            sweep[static_cast<size_t>(chosen)]["coverage"].get<double>());
  return r;
}

}  // namespace smoe::cluster
