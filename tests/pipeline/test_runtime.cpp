// Where each rank runs: one GPU per rank, and a deliberate error when a node
// has more ranks than GPUs (NCCL refuses two ranks on one device).
#include <gtest/gtest.h>

#include <functional>
#include <thread>

#include "comm/router.h"
#include "comm/thread_communicator.h"
#include "common/expect_error.h"
#include "common/fake_device.h"
#include "pipeline/runtime.h"

namespace smoe::pipeline {
namespace {

TEST(Runtime, EachRankGetsItsOwnGpu) {
  EXPECT_EQ(choose_device("auto", 4, 5, 1, 4), c10::Device(c10::kCUDA, 1));
  EXPECT_EQ(choose_device("cuda", 2, 3, 1, 2), c10::Device(c10::kCUDA, 1));
  EXPECT_EQ(choose_device("cpu", 4, 0, 0, 4), c10::Device(c10::kCPU));
  EXPECT_EQ(choose_device("auto", 0, 0, 0, 8), c10::Device(c10::kCPU));  // no GPU: the CPU
}

TEST(Runtime, MoreRanksOnANodeThanGpusIsAnErrorAtStartUp) {
  // Two ranks, one GPU (the GPU machine's case): both would use cuda:0.
  EXPECT_ERROR(choose_device("auto", 1, 1, 1, 2),
               "runtime.device: 2 ranks on the node of rank 1 but 1 GPU (local ranks 0 and 1 would share cuda:0); "
               "NCCL needs one GPU per rank: start at most 1 rank per node, or set runtime.device=cpu");
  // Every rank of the node says so, not only those that would share.
  EXPECT_ERROR(choose_device("cuda", 2, 7, 1, 3),
               "3 ranks on the node of rank 7 but 2 GPUs (local ranks 0 and 2 would share cuda:0)");
  EXPECT_ERROR(choose_device("cuda", 0, 2, 0, 1), "runtime.device is cuda but no CUDA device is available on rank 2");
  // The CPU is always possible.
  EXPECT_EQ(choose_device("cpu", 1, 1, 1, 2), c10::Device(c10::kCPU));
}

// One node's start-up played out on thread-ranks: each rank picks its device
// with `place`, then makes its first CUDA collective through a DeviceRouter
// whose device communicator refuses, as NCCL does, two ranks on one GPU.
// Returns each rank's error ("" when it ran) and counts the communicators made.
struct NodeStart {
  std::vector<std::string> errors;
  std::vector<int64_t> sums;
  int device_communicators = 0;
};
NodeStart start_node(int ranks, const std::function<c10::Device(int rank)>& place) {
  NodeStart out;
  out.errors.resize(static_cast<size_t>(ranks));
  out.sums.resize(static_cast<size_t>(ranks));
  testing::FakeDevice::Group devices;
  comm::ThreadGroup group(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        const c10::Device device = place(r);
        comm::DeviceRouter router(group.communicator(r), [&](comm::Communicator& host, int index) {
          return std::make_unique<testing::FakeDevice>(host, index, devices);
        });
        int64_t v = r + 1;
        router.allreduce(comm::Buffer{&v, 1, comm::DType::i64, comm::Device{true, device.index()}},
                         comm::ReduceOp::sum);
        out.sums[static_cast<size_t>(r)] = v;
      } catch (const Error& e) {
        out.errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  out.device_communicators = devices.created.load();
  return out;
}

TEST(Runtime, OneGpuPerRankRunsAndSharingIsRefusedBeforeAnyCommunicator) {
  // Two ranks, two GPUs: each its own device, the collective sums.
  auto ok = start_node(2, [](int r) { return choose_device("auto", 2, r, r, 2); });
  EXPECT_EQ(ok.errors, (std::vector<std::string>{"", ""}));
  EXPECT_EQ(ok.sums, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(ok.device_communicators, 2);
  // The old placement (local rank mod GPUs) put ranks 0 and 2 on cuda:0 and
  // died in the device communicator's start: the fake catches that defect.
  auto modulo = start_node(3, [](int r) { return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(r % 2)); });
  for (const auto& e : modulo.errors) EXPECT_NE(e.find("duplicate GPU: 2 ranks on device 0"), std::string::npos) << e;
  EXPECT_EQ(modulo.device_communicators, 0);
  // smoe's decision: every rank of the node stops at start-up with one line
  // naming the ranks and the device, before any device communicator exists.
  auto shared = start_node(3, [](int r) { return choose_device("auto", 2, r, r, 3); });
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(shared.errors[static_cast<size_t>(r)],
              fmt::format("runtime.device: 3 ranks on the node of rank {} but 2 GPUs (local ranks 0 and 2 would share "
                          "cuda:0); NCCL needs one GPU per rank: start at most 2 ranks per node, or set "
                          "runtime.device=cpu",
                          r));
  EXPECT_EQ(shared.device_communicators, 0);
}

}  // namespace
}  // namespace smoe::pipeline
