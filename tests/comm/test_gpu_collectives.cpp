// CUDA tensors through the DeviceRouter -> NCCL path. These run on machines
// with GPUs and a CUDA build of libtorch; elsewhere they are skipped with a
// message (the plugin's build and link are still checked by test_comm).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "comm/nccl.h"
#include "comm/router.h"
#include "comm/tensor_collectives.h"
#include "comm/thread_communicator.h"

namespace smoe::comm {
namespace {

// Why the GPU path cannot run here ("" when it can).
std::string gpu_missing(int n) {
  if (!torch::cuda::is_available()) return "no CUDA device (or a CPU-only libtorch): GPU path not run here";
  if (static_cast<int>(torch::cuda::device_count()) < n) return "needs " + std::to_string(n) + " GPUs";
  if (!nccl_plugin_built()) return "built without the NCCL plugin";
  return "";
}

// Runs the collectives of CUDA tensors on `ranks` thread ranks, rank r on GPU r.
void check_collectives(int ranks) {
  ThreadGroup group(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      DeviceRouter router(group.communicator(r));
      at::Tensor t = torch::full({1000, 4}, static_cast<float>(r + 1), torch::Device(torch::kCUDA, r));
      allreduce_in_chunks(router, t, 300);
      EXPECT_EQ(router.name(), "threads+nccl");
      EXPECT_TRUE(torch::equal(t.cpu(), torch::full({1000, 4}, ranks * (ranks + 1) / 2.0f)));
      at::Tensor b = r == 0 ? torch::arange(10, torch::TensorOptions().device(torch::kCUDA, r).dtype(torch::kFloat))
                            : torch::zeros({10}, torch::TensorOptions().device(torch::kCUDA, r));
      broadcast(router, b, 0);
      EXPECT_TRUE(torch::equal(b.cpu(), torch::arange(10, torch::kFloat)));
    });
  for (auto& t : threads) t.join();
}

// Two ranks on two GPUs: a real reduction across devices (skipped on a
// one-GPU machine rather than shrunk to one rank).
TEST(GpuCollectives, AllreduceAndBroadcastAcrossTwoGpusGoThroughNccl) {
  if (auto why = gpu_missing(2); !why.empty()) GTEST_SKIP() << why;
  check_collectives(2);
}

// One rank on one GPU: the NCCL communicator is created and used (what a
// one-GPU machine can check).
TEST(GpuCollectives, OneRankOnOneGpuUsesNccl) {
  if (auto why = gpu_missing(1); !why.empty()) GTEST_SKIP() << why;
  check_collectives(1);
}

}  // namespace
}  // namespace smoe::comm
