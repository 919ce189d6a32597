#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "comm/collective_checks.h"
#include "comm/nccl.h"
#include "comm/router.h"
#include "comm/thread_communicator.h"
#include "common/expect_error.h"
#include "common/fake_device.h"
#include "common/hang_guard.h"

namespace smoe::comm {
namespace {

class ThreadCollectives : public ::testing::TestWithParam<int> {};

TEST_P(ThreadCollectives, EveryCollectiveValueByValue) {
  run_ranks(GetParam(), [](Communicator& c) { testing::check_collectives(c); });
}

INSTANTIATE_TEST_SUITE_P(Ranks, ThreadCollectives, ::testing::Values(1, 2, 3, 5));

TEST(ThreadCommunicator, AllreduceIsBitIdenticalOnEveryRank) {
  std::vector<std::vector<float>> results(4);
  run_ranks(4, [&](Communicator& c) {
    std::vector<float> v(1000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = 0.1f * static_cast<float>(i) / static_cast<float>(c.rank() + 1);
    c.allreduce(host_buffer(v), ReduceOp::sum);
    results[static_cast<size_t>(c.rank())] = v;
  });
  for (int r = 1; r < 4; ++r) EXPECT_EQ(results[r], results[0]);
}

// Ranks 0 and 2 would wait for ever without the abort (caught by the hang
// bound, the only clock here).
TEST(ThreadCommunicator, ARankThatThrowsReleasesTheOthers) {
  EXPECT_ERROR(smoe::testing::within_hang_bound("run_ranks with a failing rank",
                                                [] {
                                                  run_ranks(3, [](Communicator& c) {
                                                    if (c.rank() == 1) fail("rank 1 failed on purpose");
                                                    c.barrier();
                                                    c.recv(kAnySource, 1);
                                                  });
                                                }),
               "rank 1 failed on purpose");
}

TEST(ThreadCommunicator, RejectsBadArguments) {
  run_ranks(2, [](Communicator& c) {
    std::vector<int64_t> small(1), big(3);
    EXPECT_ERROR(c.allgather(host_buffer(small), host_buffer(big)), "allgather: receive buffer holds 3 elements");
    Buffer cuda{small.data(), 1, DType::i64, Device{true, 0}};
    EXPECT_ERROR(c.allreduce(cuda, ReduceOp::sum), "host buffers only");
  });
}

TEST(DeviceRouter, HostBuffersToHostCudaBuffersToDeviceCreatedOnFirstUse) {
  testing::FakeDevice::Group devices;
  ThreadGroup group(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank)
    threads.emplace_back([&, rank] {
      DeviceRouter router(group.communicator(rank), [&](Communicator& host, int device) {
        EXPECT_EQ(device, rank);
        return std::make_unique<testing::FakeDevice>(host, device, devices);
      });
      std::vector<int64_t> v = {1};
      router.allreduce(host_buffer(v), ReduceOp::sum);
      EXPECT_EQ(v[0], 2);
      EXPECT_EQ(router.name(), "threads");
      EXPECT_EQ(devices.created.load(), 0);  // no CUDA buffer yet: no device communicator
      Buffer cuda{v.data(), 1, DType::i64, Device{true, rank}};
      router.allreduce(cuda, ReduceOp::sum);
      EXPECT_EQ(v[0], 4);
      router.broadcast(cuda, 0);
      EXPECT_EQ(router.name(), "threads+fake-device");
      Buffer other{v.data(), 1, DType::i64, Device{true, rank + 1}};
      EXPECT_ERROR(router.allreduce(other, ReduceOp::sum),
                   fmt::format("CUDA buffer on device {}, communicator on device {}", rank + 1, rank));
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(devices.created.load(), 2);  // once per rank
  EXPECT_EQ(devices.calls.load(), 4);    // two CUDA collectives on each of two ranks
}

// What `smoe scaling` reports per stage: each rank's bytes as the ring and
// chain algorithms move them (comm/traffic.h), counted by the router.
TEST(DeviceRouter, CountsWhatEachRankMovesAsTheRingAndChainAlgorithmsMoveIt) {
  ThreadGroup group(3);
  std::vector<TrafficCounts> counts(3);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 3; ++rank)
    threads.emplace_back([&, rank] {
      DeviceRouter router(group.communicator(rank), nullptr);
      const TrafficCounts before = router.traffic()->snapshot();
      std::vector<float> v(300, 1.0f);  // 1200 bytes
      router.allreduce(host_buffer(v), ReduceOp::sum);
      std::vector<uint8_t> b(100);
      router.broadcast(host_buffer(b), 1);  // the chain 1 -> 2 -> 0
      std::vector<int64_t> mine = {rank}, all(3);
      router.allgather(host_buffer(mine), host_buffer(all));
      router.gather_bytes(std::string(static_cast<size_t>(10 * (rank + 1)), 'x'), 0);
      if (rank == 2) router.send(0, 7, "hello");
      if (rank == 0) {
        EXPECT_EQ(router.recv(2, 7).payload, "hello");
      }
      router.barrier();
      counts[static_cast<size_t>(rank)] = router.traffic()->snapshot().since(before);
    });
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < 3; ++rank) {
    const TrafficCounts& c = counts[static_cast<size_t>(rank)];
    SCOPED_TRACE(rank);
    EXPECT_EQ(c[Op::allreduce].calls, 1);
    EXPECT_DOUBLE_EQ(c[Op::allreduce].payload_bytes, 1200);
    EXPECT_DOUBLE_EQ(c[Op::allreduce].sent_bytes, 2.0 * 2 / 3 * 1200);  // 2 (P-1)/P n
    EXPECT_DOUBLE_EQ(c[Op::allreduce].recv_bytes, 2.0 * 2 / 3 * 1200);
    EXPECT_DOUBLE_EQ(c[Op::broadcast].sent_bytes, rank == 0 ? 0 : 100);  // rank 0 ends the chain
    EXPECT_DOUBLE_EQ(c[Op::broadcast].recv_bytes, rank == 1 ? 0 : 100);  // rank 1 is the root
    EXPECT_DOUBLE_EQ(c[Op::allgather].sent_bytes, 2 * 8);                // (P-1) n
    EXPECT_DOUBLE_EQ(c[Op::gather].sent_bytes, rank == 0 ? 0 : 10.0 * (rank + 1));
    EXPECT_DOUBLE_EQ(c[Op::gather].recv_bytes, rank == 0 ? 20 + 30 : 0);
    EXPECT_EQ(c[Op::barrier].calls, 1);
  }
  EXPECT_DOUBLE_EQ(counts[2][Op::message].sent_bytes, 5);
  EXPECT_DOUBLE_EQ(counts[0][Op::message].recv_bytes, 5);
  // One rank moves nothing, whatever it calls.
  ThreadGroup alone(1);
  DeviceRouter router(alone.communicator(0), nullptr);
  std::vector<float> v(300, 1.0f);
  router.allreduce(host_buffer(v), ReduceOp::sum);
  router.broadcast(host_buffer(v), 0);
  EXPECT_EQ(router.traffic()->snapshot()[Op::allreduce].calls, 1);
  EXPECT_DOUBLE_EQ(router.traffic()->snapshot().sent_bytes(), 0);
  EXPECT_DOUBLE_EQ(router.traffic()->snapshot().recv_bytes(), 0);
}

TEST(Nccl, PluginIsBuiltAndRefusesClearlyWithoutAGpu) {
  if (!nccl_plugin_built()) GTEST_SKIP() << "built without NCCL (SMOE_WITH_NCCL=OFF or no CUDA toolkit)";
  run_ranks(1, [](Communicator& c) {
    try {
      auto nccl = open_nccl(c, 0);
      // A machine with a GPU gets a working communicator.
      EXPECT_EQ(nccl->name(), "nccl");
      EXPECT_EQ(nccl->size(), 1);
    } catch (const Error& e) {
      std::string what = e.what();
      // Without a GPU the plugin loads (NCCL and cudart linked) and says why it cannot run.
      EXPECT_NE(what.find("NCCL needs a CUDA device, but rank 0 sees none"), std::string::npos) << what;
    }
  });
}

}  // namespace
}  // namespace smoe::comm
