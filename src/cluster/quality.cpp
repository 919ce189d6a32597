#include "cluster/quality.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "cluster/distributed_kmeans.h"
#include "cluster/kmeans.h"
#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/rng.h"

namespace smoe::cluster {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double comb2(double n) { return n * (n - 1) / 2; }

// Entropy (nats) of counts.
double entropy(const at::Tensor& counts) {
  at::Tensor c = counts.to(torch::kDouble);
  const double n = c.sum().item<double>();
  if (n <= 0) return 0;
  at::Tensor p = c.masked_select(c > 0) / n;
  return -(p * p.log()).sum().item<double>();
}

nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace

at::Tensor contingency(const at::Tensor& assign, const at::Tensor& labels, int64_t K, int64_t C) {
  SMOE_CHECK(assign.numel() == labels.numel(), "contingency: {} clusters for {} labels", assign.numel(),
             labels.numel());
  at::Tensor a = assign.to(torch::kLong).cpu().reshape(-1), y = labels.to(torch::kLong).cpu().reshape(-1);
  at::Tensor keep = a >= 0;
  a = a.masked_select(keep);
  y = y.masked_select(keep);
  if (a.numel() > 0) {
    SMOE_CHECK(a.max().item<int64_t>() < K, "contingency: a cluster index is >= K = {}", K);
    SMOE_CHECK(y.min().item<int64_t>() >= 0 && y.max().item<int64_t>() < C, "contingency: a label is outside [0, {})",
               C);
  }
  return torch::bincount(a * C + y, {}, K * C).to(torch::kLong).view({K, C});
}

double purity(const at::Tensor& table) {
  const double n = table.sum().item<double>();
  return n > 0 ? std::get<0>(table.max(1)).sum().item<double>() / n : kNaN;
}

std::vector<double> cluster_purity(const at::Tensor& table) {
  at::Tensor t = table.to(torch::kDouble);
  at::Tensor p = std::get<0>(t.max(1)) / t.sum(1);  // NaN where a cluster is empty
  return std::vector<double>(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
}

double normalized_mutual_info(const at::Tensor& table) {
  at::Tensor t = table.to(torch::kDouble);
  const double n = t.sum().item<double>();
  if (n <= 0) return kNaN;
  const double hu = entropy(t.sum(1)), hv = entropy(t.sum(0));
  // One cluster and one class: identical partitions (scikit-learn returns 1).
  if (hu == 0 && hv == 0) return 1.0;
  at::Tensor pij = t / n, pi = t.sum(1, true) / n, pj = t.sum(0, true) / n;
  at::Tensor nz = pij > 0;
  const double mi = (pij * (pij / (pi * pj)).log()).masked_select(nz).sum().item<double>();
  const double denom = (hu + hv) / 2;
  return denom > 0 ? std::max(0.0, mi) / denom : 0.0;
}

double adjusted_rand_index(const at::Tensor& table) {
  at::Tensor t = table.to(torch::kDouble);
  const double n = t.sum().item<double>();
  if (n < 2) return 1.0;
  const double index = (t * (t - 1) / 2).sum().item<double>();
  at::Tensor a = t.sum(1), b = t.sum(0);
  const double sa = (a * (a - 1) / 2).sum().item<double>(), sb = (b * (b - 1) / 2).sum().item<double>();
  const double expected = sa * sb / comb2(n), maximum = (sa + sb) / 2;
  if (maximum == expected) return 1.0;  // both partitions trivial, as scikit-learn
  return (index - expected) / (maximum - expected);
}

double davies_bouldin(const at::Tensor& means, const at::Tensor& scatter, const at::Tensor& sizes) {
  at::Tensor used = (sizes.to(torch::kLong).cpu() > 0).nonzero().reshape(-1);
  if (used.numel() < 2) return 0.0;
  at::Tensor c = means.to(torch::kDouble).cpu().index_select(0, used);
  at::Tensor s = scatter.to(torch::kDouble).cpu().index_select(0, used);
  at::Tensor d = torch::cdist(c, c);
  if (s.abs().max().item<double>() == 0 || d.max().item<double>() == 0) return 0.0;
  d.masked_fill_(d == 0, std::numeric_limits<double>::infinity());  // i == j and coincident means
  at::Tensor ratio = (s.unsqueeze(1) + s.unsqueeze(0)) / d;
  return std::get<0>(ratio.max(1)).mean().item<double>();
}

double davies_bouldin(const at::Tensor& x_in, const at::Tensor& assign_in, int64_t K) {
  at::Tensor x = x_in.to(torch::kDouble).cpu(), a = assign_in.to(torch::kLong).cpu();
  at::Tensor sizes = torch::bincount(a, {}, K).to(torch::kLong);
  at::Tensor means = torch::zeros({K, x.size(1)}, torch::kDouble).index_add_(0, a, x);
  means /= sizes.clamp_min(1).to(torch::kDouble).unsqueeze(1);
  at::Tensor dist = (x - means.index_select(0, a)).norm(2, 1);
  at::Tensor scatter = torch::zeros({K}, torch::kDouble).index_add_(0, a, dist) / sizes.clamp_min(1);
  return davies_bouldin(means, scatter, sizes);
}

double silhouette(const at::Tensor& x_in, const at::Tensor& assign_in, int64_t K) {
  torch::NoGradGuard no_grad;
  at::Tensor x = x_in.to(torch::kDouble).cpu(), a = assign_in.to(torch::kLong).cpu();
  const int64_t n = x.size(0);
  at::Tensor sizes = torch::bincount(a, {}, K).to(torch::kDouble);
  const int64_t clusters = (sizes > 0).sum().item<int64_t>();
  if (clusters < 2 || clusters > n - 1) return kNaN;
  at::Tensor sum = torch::zeros({n, K}, torch::kDouble);  // sum of distances from each row to each cluster
  const int64_t block = 1024;
  for (int64_t i = 0; i < n; i += block) {
    const int64_t m = std::min(block, n - i);
    at::Tensor d = torch::cdist(x.narrow(0, i, m), x);  // [m, n]
    sum.narrow(0, i, m).index_add_(1, a, d);
  }
  at::Tensor own = sizes.index_select(0, a);  // size of each row's cluster
  at::Tensor a_mean = sum.gather(1, a.unsqueeze(1)).squeeze(1) / (own - 1).clamp_min(1);
  at::Tensor others = sum / sizes.unsqueeze(0);
  others.scatter_(1, a.unsqueeze(1), std::numeric_limits<double>::infinity());
  others.masked_fill_((sizes == 0).unsqueeze(0).expand_as(others), std::numeric_limits<double>::infinity());
  at::Tensor b_mean = std::get<0>(others.min(1));
  at::Tensor s = (b_mean - a_mean) / torch::max(a_mean, b_mean);
  s = torch::where(own > 1, s.nan_to_num(0.0), torch::zeros_like(s));  // a singleton scores 0
  return s.mean().item<double>();
}

ClusterMoments cluster_moments(const at::Tensor& x_in, const at::Tensor& assign_in, int64_t K,
                               comm::Communicator& comm) {
  torch::NoGradGuard no_grad;
  at::Tensor x = x_in.to(torch::kFloat).cpu().contiguous();
  at::Tensor assign = assign_in.to(torch::kLong).cpu().reshape(-1);
  at::Tensor keep = (assign >= 0).nonzero().reshape(-1);
  x = x.index_select(0, keep);
  assign = assign.index_select(0, keep);
  // The cluster means, then each row's squared and plain distance to its
  // mean, summed per cluster (both exact over the ranks).
  ClusterMoments m;
  at::Tensor sums;
  std::tie(sums, m.sizes) = group_sums(x, assign, K, comm);
  m.means = (sums / m.sizes.clamp_min(1).to(torch::kDouble).unsqueeze(1)).to(torch::kFloat);
  at::Tensor d2 = x.size(0) ? (x - m.means.index_select(0, assign)).pow(2).sum(1) : torch::zeros({0});
  at::Tensor dsums = group_sums(torch::stack({d2, d2.sqrt()}, 1), assign, K, comm).first;
  m.inertia = dsums.select(1, 0).sum().item<double>();
  m.scatter = dsums.select(1, 1) / m.sizes.clamp_min(1).to(torch::kDouble);
  return m;
}

double davies_bouldin(const at::Tensor& x, const at::Tensor& assign, int64_t K, comm::Communicator& comm) {
  const ClusterMoments m = cluster_moments(x, assign, K, comm);
  return davies_bouldin(m.means, m.scatter, m.sizes);
}

nlohmann::json cluster_quality(const at::Tensor& x_in, const at::Tensor& ids_in, const at::Tensor& assign_in,
                               const at::Tensor& labels_in, int64_t K, int64_t C, comm::Communicator& comm,
                               const QualityOptions& options) {
  torch::NoGradGuard no_grad;
  at::Tensor x = x_in.to(torch::kFloat).cpu().contiguous();
  at::Tensor ids = ids_in.to(torch::kLong).cpu().reshape(-1);
  at::Tensor assign = assign_in.to(torch::kLong).cpu().reshape(-1);
  at::Tensor labels = labels_in.to(torch::kLong).cpu().reshape(-1);
  SMOE_CHECK(x.dim() == 2 && ids.numel() == x.size(0) && assign.numel() == x.size(0) && labels.numel() == x.size(0),
             "cluster quality: rows, ids, clusters and labels differ in length");
  at::Tensor keep = (assign >= 0).nonzero().reshape(-1);
  int64_t counts[2] = {x.size(0), x.size(0) - keep.numel()};  // rows, outliers
  comm.allreduce(comm::host_buffer(counts, 2), comm::ReduceOp::sum);
  x = x.index_select(0, keep);
  ids = ids.index_select(0, keep);
  assign = assign.index_select(0, keep);
  labels = labels.index_select(0, keep);

  const ClusterMoments m = cluster_moments(x, assign, K, comm);
  const at::Tensor& sizes = m.sizes;

  at::Tensor table = contingency(assign, labels, K, C).contiguous();
  comm::allreduce(comm, table, comm::ReduceOp::sum);

  // The silhouette on the rows whose hashed id falls under the sample's share.
  const int64_t n_in = counts[0] - counts[1];
  const double share = n_in > 0 ? std::min(1.0, static_cast<double>(options.silhouette_sample) / n_in) : 0.0;
  std::vector<int64_t> pick;
  const int64_t* pid = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    const double u = static_cast<double>(mix64(options.seed ^ mix64(static_cast<uint64_t>(pid[i])))) / 0x1p64;
    if (u < share) pick.push_back(i);
  }
  at::Tensor p = torch::tensor(pick, torch::kLong);
  at::Tensor s_ids = comm::gather_rows(comm, ids.index_select(0, p).contiguous(), 0);
  at::Tensor s_x = comm::gather_rows(comm, x.index_select(0, p).contiguous(), 0);
  at::Tensor s_a = comm::gather_rows(comm, assign.index_select(0, p).contiguous(), 0);
  double sil[2] = {kNaN, 0};  // value, rows
  if (comm.is_root()) {
    at::Tensor order = s_ids.argsort();
    sil[0] = silhouette(s_x.index_select(0, order), s_a.index_select(0, order), K);
    sil[1] = static_cast<double>(s_ids.numel());
  }
  comm.broadcast(comm::host_buffer(sil, 2), 0);

  std::vector<int64_t> size_list(sizes.data_ptr<int64_t>(), sizes.data_ptr<int64_t>() + K);
  std::vector<std::vector<int64_t>> rows;
  for (int64_t k = 0; k < K; ++k) {
    at::Tensor r = table[k].contiguous();
    rows.emplace_back(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + C);
  }
  nlohmann::json cp = nlohmann::json::array();
  for (double v : cluster_purity(table)) cp.push_back(finite_or_null(v));
  return {{"k", K},
          {"rows", counts[0]},
          {"outliers", counts[1]},
          {"sizes", size_list},
          {"inertia", m.inertia},
          {"davies_bouldin", davies_bouldin(m.means, m.scatter, m.sizes)},
          {"silhouette", finite_or_null(sil[0])},
          {"silhouette_rows", static_cast<int64_t>(sil[1])},
          {"purity", finite_or_null(purity(table))},
          {"cluster_purity", cp},
          {"nmi", finite_or_null(normalized_mutual_info(table))},
          {"ari", adjusted_rand_index(table)},
          {"contingency", rows}};
}

}  // namespace smoe::cluster
