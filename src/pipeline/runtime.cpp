#include "pipeline/runtime.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/torch.h>

#include "core/affinity.h"
#include "core/error.h"

namespace smoe::pipeline {

RuntimeInfo setup_runtime(const RuntimeConfig& c, int rank, int world, int local_rank, int local_size) {
  RuntimeInfo r;
  r.rank = rank;
  r.world = world;
  r.local_rank = local_rank;
  r.local_size = std::max(local_size, 1);
  r.threads = threads_for_rank(static_cast<int>(c.threads), r.local_size);
  at::set_num_threads(r.threads);
  const int gpus = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  r.device = choose_device(c.device, gpus, rank, local_rank, r.local_size);
  // The rank's GPU becomes the current device at start-up, so that nothing
  // (a default "cuda" tensor, a library's context) lands on GPU 0 by accident.
  if (r.device.is_cuda()) c10::impl::getDeviceGuardImpl(c10::kCUDA)->setDevice(r.device);
  return r;
}

c10::Device choose_device(const std::string& wanted, int cuda_devices, int rank, int local_rank, int local_size) {
  SMOE_CHECK(wanted != "cuda" || cuda_devices > 0, "runtime.device is cuda but no CUDA device is available on rank {}",
             rank);
  if (wanted == "cpu" || cuda_devices == 0) return c10::Device(c10::kCPU);
  SMOE_CHECK(local_size <= cuda_devices,
             "runtime.device: {} ranks on the node of rank {} but {} GPU{} (local ranks 0 and {} would share cuda:0); "
             "NCCL needs one GPU per rank: start at most {} rank{} per node, or set runtime.device=cpu",
             local_size, rank, cuda_devices, cuda_devices == 1 ? "" : "s", cuda_devices, cuda_devices,
             cuda_devices == 1 ? "" : "s");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

}  // namespace smoe::pipeline
