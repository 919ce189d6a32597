// smoe's K-means on an embedding matrix stored as .npy (float32 [n, d]):
// prints one JSON line with the time, the inertia and the iterations.
//
//   bench_kmeans X.npy K [--max-iter 100] [--tol 1e-4] [--restarts 1] [--seed 0] [--threads 2] [--ranks 0]
//
// --ranks P > 0 runs the distributed K-means (cluster/distributed_kmeans.h)
// on P ranks-as-threads, each holding a contiguous share of the rows.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <xtensor/xnpy.hpp>

#include "cluster/distributed_kmeans.h"
#include "cluster/kmeans.h"
#include "comm/thread_communicator.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: bench_kmeans X.npy K [--max-iter N] [--tol T] [--restarts R] [--seed S] [--threads N] [--ranks P]\n");
    return 2;
  }
  smoe::cluster::KMeansOptions o;
  o.k = std::atoll(argv[2]);
  o.restarts = 1;
  int threads = 2, ranks = 0;
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
  }
  at::set_num_threads(threads);
  std::ifstream in(argv[1], std::ios::binary);
  auto f = xt::detail::load_npy_file(in);
  if (f.m_typestring != "<f4" || f.m_shape.size() != 2) {
    std::fprintf(stderr, "bench_kmeans: error: %s must be a float32 matrix\n", argv[1]);
    return 1;
  }
  const int64_t n = static_cast<int64_t>(f.m_shape[0]), d = static_cast<int64_t>(f.m_shape[1]);
  at::Tensor x = torch::from_blob(f.m_buffer, {n, d}, torch::kFloat).clone();
  auto t0 = std::chrono::steady_clock::now();
  smoe::cluster::KMeansResult r;
  if (ranks > 0) {
    smoe::cluster::DistributedKMeansOptions dopt;
    dopt.kmeans = o;
    smoe::comm::run_ranks(ranks, [&](smoe::comm::Communicator& c) {
      // The cores shared out among the ranks, as mpirun would bind them.
      at::set_num_threads(std::max(1, threads / ranks));
      const int64_t from = n * c.rank() / ranks, to = n * (c.rank() + 1) / ranks;
      auto mine = smoe::cluster::kmeans(x.narrow(0, from, to - from), torch::arange(from, to, torch::kLong), dopt, c);
      if (c.rank() == 0) r = mine;
    });
  } else {
    r = smoe::cluster::kmeans(x, o);
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t iters = 0;
  for (const auto& st : r.restarts) iters += st.iterations;
  std::printf("%s\n", nlohmann::json{{"seconds", s},
                                     {"inertia", r.inertia},
                                     {"iterations", iters},
                                     {"n", n},
                                     {"d", d},
                                     {"k", o.k},
                                     {"threads", threads},
                                     {"ranks", ranks}}
                          .dump()
                          .c_str());
  return 0;
}
