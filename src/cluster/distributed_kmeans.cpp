#include "cluster/distributed_kmeans.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/heartbeat.h"
#include "core/rng.h"

namespace smoe::cluster {
namespace {

double all_max(comm::Communicator& comm, double v) {
  comm.allreduce(comm::host_buffer(&v, 1), comm::ReduceOp::max);
  return v;
}

int64_t all_sum(comm::Communicator& comm, int64_t v) {
  comm.allreduce(comm::host_buffer(&v, 1), comm::ReduceOp::sum);
  return v;
}

// A power of two such that `bound` (the largest magnitude any sum can reach)
// times it stays below 2^61: integer sums of rounded terms cannot overflow.
double fixed_scale(double bound) {
  if (!(bound > 0) || !std::isfinite(bound)) return std::ldexp(1.0, 40);
  return std::ldexp(1.0, static_cast<int>(std::min(40.0, std::floor(61.0 - std::log2(bound)))));
}

// One term in fixed point (truncated toward zero: any fixed rule will do,
// the terms only have to be the same bits whichever rank adds them).
inline int64_t fixed(double v, double scale) { return static_cast<int64_t>(v * scale); }

// acc[labels[i], j] += fixed(x[i, j]) over the rows of x [n, d] (float,
// contiguous, CPU); acc is int64 [k, d]. A plain loop: torch's float to
// int64 conversion of the whole matrix is an order of magnitude slower.
void add_fixed_rows(const at::Tensor& x, const at::Tensor& labels, double scale, at::Tensor& acc) {
  const int64_t n = x.size(0), d = x.size(1);
  const float* px = x.data_ptr<float>();
  const int64_t* pl = labels.data_ptr<int64_t>();
  int64_t* pa = acc.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t* row = pa + pl[i] * d;
    const float* xi = px + i * d;
    for (int64_t j = 0; j < d; ++j) row[j] += fixed(static_cast<double>(xi[j]), scale);
  }
}

// The sum over every rank of the terms (any float tensor), in fixed point.
double exact_total(comm::Communicator& comm, const at::Tensor& terms, double bound) {
  const double scale = fixed_scale(bound);
  at::Tensor t = terms.to(torch::kDouble).cpu().contiguous();
  int64_t local = 0;
  const double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) local += fixed(p[i], scale);
  return static_cast<double>(all_sum(comm, local)) / scale;
}

// The seeding sample: rows whose hashed id falls below m/n (about m rows,
// the same whichever rank holds them), gathered on every rank in id order.
at::Tensor seeding_rows(const at::Tensor& x, const at::Tensor& ids, int64_t n, int64_t m, uint64_t seed,
                        comm::Communicator& comm) {
  at::Tensor keep_ids = ids, keep = x;
  if (m < n) {
    std::vector<int64_t> rows;
    const int64_t* id = ids.data_ptr<int64_t>();
    for (int64_t i = 0; i < ids.numel(); ++i)
      if (mix64(seed ^ static_cast<uint64_t>(id[i])) % static_cast<uint64_t>(n) < static_cast<uint64_t>(m))
        rows.push_back(i);
    at::Tensor r = torch::tensor(rows, torch::kLong);
    keep_ids = ids.index_select(0, r);
    keep = x.index_select(0, r.to(x.device()));
  }
  at::Tensor all_ids = keep_ids, all = keep;
  if (comm.size() > 1) {
    all_ids = comm::broadcast_tensor(comm, comm::gather_rows(comm, keep_ids.contiguous(), 0), 0);
    all = comm::broadcast_tensor(comm, comm::gather_rows(comm, keep.cpu().contiguous(), 0), 0);
  }
  if (all_ids.numel() > 1 &&
      !(all_ids.narrow(0, 1, all_ids.numel() - 1) > all_ids.narrow(0, 0, all_ids.numel() - 1)).all().item<bool>())
    all = all.index_select(0, all_ids.argsort().to(all.device()));
  return all.to(x.device());
}

// For each of `e` empty clusters, the farthest rows over all ranks (ties:
// lowest id): each rank offers its own e farthest, every rank picks the same.
at::Tensor farthest_rows(const at::Tensor& x, const at::Tensor& ids, const at::Tensor& dist, int64_t e,
                         comm::Communicator& comm) {
  const int64_t d = x.size(1), n = x.size(0);
  // Local candidates, padded to e with distance -1.
  at::Tensor cand_d = torch::full({e}, -1.0, torch::kDouble), cand_id = torch::full({e}, int64_t{-1}, torch::kLong);
  at::Tensor cand_x = torch::zeros({e, d});
  if (n > 0) {
    at::Tensor dd = dist.to(torch::kDouble).cpu();
    // Sort by (distance desc, id asc): stable sort by id, then by distance.
    at::Tensor by_id = ids.argsort();
    at::Tensor order =
        by_id.index_select(0, dd.index_select(0, by_id).argsort(/*stable=*/true, 0, /*descending=*/true));
    const int64_t take = std::min(e, n);
    at::Tensor top = order.narrow(0, 0, take);
    cand_d.narrow(0, 0, take).copy_(dd.index_select(0, top));
    cand_id.narrow(0, 0, take).copy_(ids.index_select(0, top));
    cand_x.narrow(0, 0, take).copy_(x.index_select(0, top.to(x.device())).cpu());
  }
  const int P = comm.size();
  at::Tensor all_d = torch::empty({P * e}, torch::kDouble), all_id = torch::empty({P * e}, torch::kLong);
  at::Tensor all_x = torch::empty({P * e, d});
  comm.allgather(comm::buffer_of(cand_d), comm::buffer_of(all_d));
  comm.allgather(comm::buffer_of(cand_id), comm::buffer_of(all_id));
  comm.allgather(comm::buffer_of(cand_x), comm::buffer_of(all_x));
  at::Tensor by_id = all_id.argsort();
  at::Tensor order = by_id.index_select(0, all_d.index_select(0, by_id).argsort(true, 0, true));
  return all_x.index_select(0, order.narrow(0, 0, e)).to(x.device());
}

// Squared distance of each row to its centroid, row by row: unlike the
// blocked matrix products of the assignment, the same bits whatever rows
// share a block (the inertia and the farthest rows must not depend on the split).
at::Tensor row_distances(const at::Tensor& x, const at::Tensor& c, const at::Tensor& labels) {
  return (x - c.index_select(0, labels.to(x.device()))).pow(2).sum(1);
}

}  // namespace

std::pair<at::Tensor, at::Tensor> group_sums(const at::Tensor& input, const at::Tensor& groups, int64_t G,
                                             comm::Communicator& comm) {
  at::Tensor x = input.to(torch::kFloat).cpu().contiguous();
  const int64_t n_local = x.size(0), d = x.size(1);
  const int64_t n = all_sum(comm, n_local);
  const double max_abs = all_max(comm, n_local ? x.abs().max().item<double>() : 0.0);
  const double scale = fixed_scale(max_abs * static_cast<double>(n));
  at::Tensor acc = torch::zeros({G * d + G}, torch::kLong);
  if (n_local > 0) {
    at::Tensor g = groups.to(torch::kLong).cpu().contiguous();
    at::Tensor sums = acc.narrow(0, 0, G * d).view({G, d});
    add_fixed_rows(x, g, scale, sums);
    acc.narrow(0, G * d, G).copy_(torch::bincount(g, {}, G));
  }
  comm::allreduce(comm, acc, comm::ReduceOp::sum);
  return {acc.narrow(0, 0, G * d).view({G, d}).to(torch::kDouble) / scale, acc.narrow(0, G * d, G).clone()};
}

KMeansResult kmeans(const at::Tensor& input, const at::Tensor& ids_in, const DistributedKMeansOptions& options,
                    comm::Communicator& comm) {
  const KMeansOptions& o = options.kmeans;
  SMOE_CHECK(input.dim() == 2, "k-means: expected a matrix [n, d], got {} dimensions", input.dim());
  SMOE_CHECK(ids_in.dim() == 1 && ids_in.size(0) == input.size(0), "k-means: {} ids for {} rows", ids_in.numel(),
             input.size(0));
  SMOE_CHECK(o.k >= 1, "k-means: k must be at least 1, got {}", o.k);
  SMOE_CHECK(o.restarts >= 1 && o.max_iter >= 1, "k-means: restarts and max_iter must be at least 1");
  torch::NoGradGuard no_grad;
  at::Tensor x = input.to(torch::kFloat).contiguous();
  at::Tensor ids = ids_in.to(torch::kLong).cpu().contiguous();
  const int64_t d = x.size(1), n_local = x.size(0);
  const int64_t n = all_sum(comm, n_local);
  SMOE_CHECK(n >= o.k, "k-means: number of points ({}) should be at least k ({})", n, o.k);

  // The M-step's sums in fixed point, at a scale no sum can overflow.
  const double max_abs = all_max(comm, n_local ? x.abs().max().item<double>() : 0.0);
  const double scale = fixed_scale(max_abs * static_cast<double>(n));
  at::Tensor x_cpu = x.cpu().contiguous();
  at::Tensor x_sq = x.pow(2).sum(1);

  // scikit-learn's tolerance, relative to the mean variance of the features.
  at::Tensor col_sums = torch::zeros({1, d}, torch::kLong);
  add_fixed_rows(x_cpu, torch::zeros({n_local}, torch::kLong), scale, col_sums);
  comm::allreduce(comm, col_sums, comm::ReduceOp::sum);
  const double mean_sq =
      exact_total(comm, x_sq, max_abs * max_abs * static_cast<double>(d * n)) / static_cast<double>(n);
  const at::Tensor mean = col_sums.to(torch::kDouble) / scale / static_cast<double>(n);
  const double mean_var = (mean_sq - mean.pow(2).sum().item<double>()) / static_cast<double>(d);
  const double tol = o.tol * std::max(mean_var, 0.0);

  const int64_t m = std::min(n, options.seeding_sample);
  at::Tensor sample = seeding_rows(x, ids, n, m, derive_seed(o.seed, "kmeans-sample"), comm);
  SMOE_CHECK(sample.size(0) >= o.k, "k-means: the seeding sample holds {} rows, fewer than k = {} (raise it)",
             sample.size(0), o.k);

  KMeansResult best;
  best.inertia = std::numeric_limits<double>::infinity();
  for (int64_t r = 0; r < o.restarts; ++r) {
    at::Tensor c = kmeans_plus_plus(sample, o.k, derive_seed(o.seed, "kmeans++", {static_cast<uint64_t>(r)}));
    at::Tensor labels, previous, dist;
    KMeansStats stats;
    bool settled = false;
    for (int64_t it = 0; it < o.max_iter; ++it) {
      heartbeat::beat("k-means iteration");
      std::tie(labels, dist) = nearest_centroids(x, x_sq, c, o.block_rows);
      if (previous.defined() && all_sum(comm, (labels != previous).sum().item<int64_t>()) == 0) {
        settled = true;
        break;
      }
      previous = labels;
      // M-step: integer sums [k, d] and counts [k], summed over the ranks in one buffer.
      at::Tensor acc = torch::zeros({o.k * d + o.k}, torch::kLong);
      if (n_local > 0) {
        at::Tensor lab = labels.cpu().contiguous();
        at::Tensor sums_view = acc.narrow(0, 0, o.k * d).view({o.k, d});
        add_fixed_rows(x_cpu, lab, scale, sums_view);
        acc.narrow(0, o.k * d, o.k).copy_(torch::bincount(lab, {}, o.k));
      }
      comm::allreduce(comm, acc, comm::ReduceOp::sum);
      at::Tensor sums = acc.narrow(0, 0, o.k * d).view({o.k, d}).to(torch::kDouble) / scale;
      at::Tensor counts = acc.narrow(0, o.k * d, o.k).to(torch::kDouble);
      at::Tensor empty = (counts == 0).nonzero().flatten();
      if (empty.numel() > 0) {
        at::Tensor far =
            farthest_rows(x, ids, row_distances(x, c, labels), empty.numel(), comm).to(torch::kDouble).cpu();
        sums.index_copy_(0, empty, far);
        counts.index_fill_(0, empty, 1.0);
      }
      at::Tensor next = (sums / counts.unsqueeze(1)).to(torch::kFloat).to(x.device());
      const double shift = (next - c).pow(2).sum().item<double>();
      c = next;
      stats.iterations = it + 1;
      if (shift <= tol) break;
    }
    if (!settled) std::tie(labels, dist) = nearest_centroids(x, x_sq, c, o.block_rows);
    dist = row_distances(x, c, labels);
    const double max_dist = all_max(comm, n_local ? dist.max().item<double>() : 0.0);
    stats.inertia = exact_total(comm, dist, max_dist * static_cast<double>(n));
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
