#include "pipeline/runtime.h"

#include <torch/torch.h>

#include <thread>

#include "core/error.h"

namespace smoe::pipeline {

RuntimeInfo setup_runtime(const RuntimeConfig& c, int rank, int world, int local_rank, int local_size) {
  RuntimeInfo r;
  r.rank = rank;
  r.world = world;
  r.local_rank = local_rank;
  r.local_size = std::max(local_size, 1);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  r.threads = c.threads > 0 ? static_cast<int>(c.threads) : std::max(1, cores / r.local_size);
  at::set_num_threads(r.threads);
  const bool cuda = torch::cuda::is_available();
  SMOE_CHECK(c.device != "cuda" || cuda, "runtime.device is cuda but no CUDA device is available on rank {}", rank);
  if (cuda && c.device != "cpu") {
    const int gpus = static_cast<int>(torch::cuda::device_count());
    r.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank % gpus));
  }
  return r;
}

}  // namespace smoe::pipeline
