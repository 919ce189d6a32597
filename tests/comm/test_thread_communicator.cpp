#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "comm/collective_checks.h"
#include "comm/nccl.h"
#include "comm/router.h"
#include "comm/thread_communicator.h"
#include "common/expect_error.h"

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

TEST(ThreadCommunicator, ARankThatThrowsReleasesTheOthers) {
  auto start = std::chrono::steady_clock::now();
  EXPECT_ERROR(run_ranks(3,
                         [](Communicator& c) {
                           if (c.rank() == 1) fail("rank 1 failed on purpose");
                           c.barrier();  // ranks 0 and 2 would wait forever without abort
                           c.recv(kAnySource, 1);
                         }),
               "rank 1 failed on purpose");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(ThreadCommunicator, RejectsBadArguments) {
  run_ranks(2, [](Communicator& c) {
    std::vector<int64_t> small(1), big(3);
    EXPECT_ERROR(c.allgather(host_buffer(small), host_buffer(big)), "allgather: receive buffer holds 3 elements");
    Buffer cuda{small.data(), 1, DType::i64, Device{true, 0}};
    EXPECT_ERROR(c.allreduce(cuda, ReduceOp::sum), "host buffers only");
  });
}

// A device communicator that records what reaches it.
class RecordingDevice final : public Communicator {
 public:
  RecordingDevice(Communicator& host, std::atomic<int>& calls) : host_(host), calls_(calls) {}
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  std::string name() const override { return "fake-device"; }
  void barrier() override {}
  void broadcast(Buffer, int) override { ++calls_; }
  void allreduce(Buffer, ReduceOp) override { ++calls_; }
  void allgather(Buffer, Buffer) override { ++calls_; }
  std::vector<std::string> gather_bytes(std::string_view, int) override { return {}; }
  void send(int, int, std::string_view) override {}
  Message recv(int, int) override { return {}; }
  std::optional<Message> try_recv(int, int) override { return std::nullopt; }
  [[noreturn]] void abort(int, const std::string& why) override { fail("{}", why); }

 private:
  Communicator& host_;
  std::atomic<int>& calls_;
};

TEST(DeviceRouter, HostBuffersToHostCudaBuffersToDeviceCreatedOnFirstUse) {
  std::atomic<int> created{0}, device_calls{0};
  ThreadGroup group(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank)
    threads.emplace_back([&, rank] {
      DeviceRouter router(group.communicator(rank), [&](Communicator& host, int device) {
        ++created;
        EXPECT_EQ(device, 0);
        return std::make_unique<RecordingDevice>(host, device_calls);
      });
      std::vector<int64_t> v = {1};
      router.allreduce(host_buffer(v), ReduceOp::sum);
      EXPECT_EQ(v[0], 2);
      EXPECT_EQ(router.name(), "threads");
      Buffer cuda{v.data(), 1, DType::i64, Device{true, 0}};
      router.allreduce(cuda, ReduceOp::sum);
      router.broadcast(cuda, 0);
      EXPECT_EQ(router.name(), "threads+fake-device");
      Buffer other{v.data(), 1, DType::i64, Device{true, 1}};
      EXPECT_ERROR(router.allreduce(other, ReduceOp::sum), "CUDA buffer on device 1, communicator on device 0");
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 2);       // once per rank
  EXPECT_EQ(device_calls.load(), 4);  // two CUDA collectives on each of two ranks
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
