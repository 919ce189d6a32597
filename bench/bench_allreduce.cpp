// The E-step's allreduce through smoe's communicator (DeviceRouter -> MPI,
// in chunks of em.chunk_samples rows) against one plain MPI_Allreduce of the
// same bytes. Run under mpirun; prints the achieved bandwidth of both and
// their ratio for N x K float matrices.
//
//   mpirun -np 2 bench_allreduce [chunk_rows=65536] [repeats=20]
#include <mpi.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "comm/mpi_communicator.h"
#include "comm/router.h"
#include "comm/tensor_collectives.h"

namespace {

template <typename Fn>
double median_seconds(smoe::comm::Communicator& c, int repeats, Fn&& fn) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    c.barrier();
    auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  // The slowest rank decides: take the maximum of the medians.
  return c.allreduce_max(t[t.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  smoe::comm::MpiRuntime mpi(&argc, &argv);
  smoe::comm::DeviceRouter comm(mpi.world());
  const int64_t chunk = argc > 1 ? std::atoll(argv[1]) : 65536;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 20;
  if (comm.is_root())
    std::printf("%d ranks, chunks of %lld rows, median of %d\n%10s %4s %10s %12s %12s %8s\n", comm.size(),
                static_cast<long long>(chunk), repeats, "N", "K", "MB", "smoe_GB/s", "mpi_GB/s", "ratio");
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{60000, 4}, {60000, 20}, {200000, 20}, {1000000, 20}}) {
    at::Tensor a = torch::rand({n, k}), b = a.clone();
    const double bytes = static_cast<double>(a.nbytes());
    double ours = median_seconds(comm, repeats, [&] { smoe::comm::allreduce_in_chunks(comm, a, chunk); });
    double raw = median_seconds(comm, repeats, [&] {
      MPI_Allreduce(MPI_IN_PLACE, b.data_ptr(), static_cast<int>(b.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    });
    if (comm.is_root())
      std::printf("%10lld %4lld %10.1f %12.2f %12.2f %8.3f\n", static_cast<long long>(n), static_cast<long long>(k),
                  bytes / 1e6, bytes / ours / 1e9, bytes / raw / 1e9, raw / ours);
  }
  return 0;
}
