// smoe's K-means on an embedding matrix stored as .npy (float32 [n, d]):
// prints one JSON line with the time, the inertia and the iterations.
//
//   bench_kmeans X.npy K [--max-iter 100] [--tol 1e-4] [--restarts 1] [--seed 0] [--threads 2] [--ranks 0]
//                        [--centroids C.npy]
//
// --centroids writes the centroids found (float32 [K, d]).
// --ranks P > 0 runs the distributed K-means (cluster/distributed_kmeans.h)
// on P ranks-as-threads, each holding a contiguous share of the rows.
// --labels Y.npy (int64 [n]) adds the cluster-quality scores
// (cluster/quality.h) of the result, or with --assign A.npy (int64 [n]) of
// that given clustering instead of K-means'; --silhouette-sample sets the
// silhouette's sample size.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cluster/distributed_kmeans.h"
#include "cluster/kmeans.h"
#include "cluster/quality.h"
#include "comm/thread_communicator.h"
#include "common/xtensor_io.h"  // tests/common

namespace {

// A .npy file as a tensor of the given numpy type (e.g. "<f4", "<i8"), or exit 1.
at::Tensor load_npy(const char* path, const std::string& type, at::ScalarType dtype) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "bench_kmeans: error: cannot open %s\n", path);
    std::exit(1);
  }
  auto f = xt::detail::load_npy_file(in);
  if (f.m_typestring != type) {
    std::fprintf(stderr, "bench_kmeans: error: %s holds %s, expected %s\n", path, f.m_typestring.c_str(), type.c_str());
    std::exit(1);
  }
  std::vector<int64_t> shape(f.m_shape.begin(), f.m_shape.end());
  return torch::from_blob(f.m_buffer, shape, dtype).clone();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(
        stderr,
        "usage: bench_kmeans X.npy K [--max-iter N] [--tol T] [--restarts R] [--seed S] [--threads N] [--ranks P]\n");
    return 2;
  }
  smoe::cluster::KMeansOptions o;
  o.k = std::atoll(argv[2]);
  o.restarts = 1;
  int threads = 2, ranks = 0;
  const char* labels_path = nullptr;
  const char* assign_path = nullptr;
  const char* centroids_path = nullptr;
  smoe::cluster::QualityOptions quality_options;
  for (int i = 3; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--max-iter")
      o.max_iter = std::atoll(argv[i + 1]);
    else if (a == "--tol")
      o.tol = std::atof(argv[i + 1]);
    else if (a == "--restarts")
      o.restarts = std::atoll(argv[i + 1]);
    else if (a == "--seed")
      o.seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (a == "--ranks")
      ranks = std::atoi(argv[i + 1]);
    else if (a == "--labels")
      labels_path = argv[i + 1];
    else if (a == "--assign")
      assign_path = argv[i + 1];
    else if (a == "--centroids")
      centroids_path = argv[i + 1];
    else if (a == "--silhouette-sample")
      quality_options.silhouette_sample = std::atoll(argv[i + 1]);
  }
  at::set_num_threads(threads);
  at::Tensor x = load_npy(argv[1], "<f4", torch::kFloat);
  if (x.dim() != 2) {
    std::fprintf(stderr, "bench_kmeans: error: %s must be a float32 matrix\n", argv[1]);
    return 1;
  }
  const int64_t n = x.size(0), d = x.size(1);
  at::Tensor labels = labels_path ? load_npy(labels_path, "<i8", torch::kLong) : at::Tensor();
  at::Tensor given = assign_path ? load_npy(assign_path, "<i8", torch::kLong) : at::Tensor();
  auto t0 = std::chrono::steady_clock::now();
  smoe::cluster::KMeansResult r;
  if (given.defined()) {
    // Scores the given clustering: no K-means.
  } else if (ranks > 0) {
    smoe::cluster::DistributedKMeansOptions dopt;
    dopt.kmeans = o;
    smoe::comm::run_ranks(ranks, [&](smoe::comm::Communicator& c) {
      // The cores shared out among the ranks, as mpirun would bind them.
      at::set_num_threads(std::max(1, threads / ranks));
      const int64_t from = n * c.rank() / ranks, to = n * (c.rank() + 1) / ranks;
      auto mine = smoe::cluster::kmeans(x.narrow(0, from, to - from), torch::arange(from, to, torch::kLong), dopt, c);
      if (c.rank() == 0) r = mine;
      c.barrier();
      if (c.rank() == 0) r.assign = torch::empty({n}, torch::kLong);
      c.barrier();
      r.assign.narrow(0, from, to - from).copy_(mine.assign);
    });
  } else {
    r = smoe::cluster::kmeans(x, o);
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json quality;
  if (labels.defined()) {
    at::Tensor assign = given.defined() ? given : r.assign;
    const int64_t C = labels.max().item<int64_t>() + 1, P = std::max(ranks, 1);
    smoe::comm::run_ranks(P, [&](smoe::comm::Communicator& c) {
      const int64_t from = n * c.rank() / P, to = n * (c.rank() + 1) / P;
      auto q = smoe::cluster::cluster_quality(x.narrow(0, from, to - from), torch::arange(from, to, torch::kLong),
                                              assign.narrow(0, from, to - from), labels.narrow(0, from, to - from), o.k,
                                              C, c, quality_options);
      if (c.rank() == 0) quality = q;
    });
  }
  if (centroids_path && r.centroids.defined()) {
    at::Tensor c = r.centroids.to(torch::kFloat).contiguous();
    xt::xarray<float> out =
        xt::adapt(c.data_ptr<float>(), static_cast<size_t>(c.numel()), xt::no_ownership(),
                  std::vector<size_t>{static_cast<size_t>(c.size(0)), static_cast<size_t>(c.size(1))});
    xt::dump_npy(centroids_path, out);
  }
  int64_t iters = 0;
  for (const auto& st : r.restarts) iters += st.iterations;
  std::printf("%s\n", nlohmann::json{{"seconds", s},
                                     {"inertia", r.inertia},
                                     {"iterations", iters},
                                     {"n", n},
                                     {"d", d},
                                     {"k", o.k},
                                     {"threads", threads},
                                     {"ranks", ranks},
                                     {"quality", quality}}
                          .dump()
                          .c_str());
  return 0;
}
