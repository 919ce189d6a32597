// Where each rank runs: the device follows from what the ranks of a node see,
// whatever the Slurm GPU binding; ranks that share a device are found by the
// device's id and run with their collectives through the host; errors reach
// every rank before anything is written.
#include <gtest/gtest.h>

#include <mutex>
#include <thread>

#include <torch/cuda.h>

#include "comm/nccl.h"
#include "comm/router.h"
#include "comm/tensor_collectives.h"
#include "comm/thread_communicator.h"
#include "common/expect_error.h"
#include "common/fake_accelerator.h"
#include "common/fake_device.h"
#include "pipeline/device_choice.h"
#include "pipeline/rank_use.h"
#include "pipeline/runtime.h"

namespace smoe::pipeline {
namespace {

// One node: each local rank's visible device ids.
std::vector<NodeRank> node_of(const std::vector<std::vector<std::string>>& views) {
  std::vector<NodeRank> node;
  for (size_t r = 0; r < views.size(); ++r) node.push_back({static_cast<int>(r), views[r]});
  return node;
}

// Each rank's (index, id, ranks it shares with).
std::vector<std::tuple<int, std::string, std::vector<int>>> choices(const std::vector<std::vector<std::string>>& v) {
  std::vector<std::tuple<int, std::string, std::vector<int>>> out;
  const auto node = node_of(v);
  for (size_t r = 0; r < v.size(); ++r) {
    const DeviceChoice c = choose_device_index(node, static_cast<int>(r));
    out.emplace_back(c.index, c.id, c.shared_with);
  }
  return out;
}

using Row = std::tuple<int, std::string, std::vector<int>>;
const std::vector<std::string> kFour = {"A", "B", "C", "D"};

TEST(DeviceChoice, EveryRankSeesEveryGpu) {
  // --gpus-per-node=4 (or no binding): local rank r takes GPU r.
  EXPECT_EQ(choices({kFour, kFour, kFour, kFour}),
            (std::vector<Row>{{0, "A", {}}, {1, "B", {}}, {2, "C", {}}, {3, "D", {}}}));
}

TEST(DeviceChoice, OneGpuBoundToEachTask) {
  // --gpus-per-task=1, --gpu-bind=single:1 or a per-rank CUDA_VISIBLE_DEVICES:
  // every rank sees one device, as its index 0. The old rule (local rank as
  // the index) sent rank 1 to cuda:1, which it cannot see.
  EXPECT_EQ(choices({{"A"}, {"B"}, {"C"}, {"D"}}),
            (std::vector<Row>{{0, "A", {}}, {0, "B", {}}, {0, "C", {}}, {0, "D", {}}}));
}

TEST(DeviceChoice, SubsetsOfTheNodesGpus) {
  // Two GPUs per task (--gpus-per-task=2): each rank takes the first of its own.
  EXPECT_EQ(choices({{"A", "B"}, {"C", "D"}}), (std::vector<Row>{{0, "A", {}}, {0, "C", {}}}));
  // Two ranks per pair of GPUs (CUDA_VISIBLE_DEVICES=0,1 and 2,3): shared out in order.
  EXPECT_EQ(choices({{"A", "B"}, {"A", "B"}, {"C", "D"}, {"C", "D"}}),
            (std::vector<Row>{{0, "A", {}}, {1, "B", {}}, {0, "C", {}}, {1, "D", {}}}));
}

TEST(DeviceChoice, MoreRanksThanGpusShareAndSayWithWhom) {
  // Two ranks, one GPU (the GPU machine lent to this project).
  EXPECT_EQ(choices({{"A"}, {"A"}}), (std::vector<Row>{{0, "A", {1}}, {0, "A", {0}}}));
  // Three ranks, two GPUs: ranks 0 and 2 share A.
  EXPECT_EQ(choices({{"A", "B"}, {"A", "B"}, {"A", "B"}}),
            (std::vector<Row>{{0, "A", {2}}, {1, "B", {}}, {0, "A", {0}}}));
  // The same GPU under two indices: rank 1 takes B as its index 1, rank 2
  // sees only B (as its index 0). Arithmetic on indices misses it; ids do not.
  EXPECT_EQ(choices({{"A", "B"}, {"A", "B"}, {"B"}}), (std::vector<Row>{{0, "A", {}}, {1, "B", {2}}, {0, "B", {1}}}));
}

TEST(DeviceChoice, NoDeviceOrUnknownRank) {
  EXPECT_EQ(choices({{}, {"A"}}), (std::vector<Row>{{-1, "", {}}, {0, "A", {}}}));
  EXPECT_ERROR(choose_device_index(node_of({{"A"}}), 3), "local rank 3 is not among its node's 1 ranks");
}

TEST(Runtime, DeviceTypes) {
  auto type = [](const std::string& name, int cuda_devices) {
    Config c;
    c.set("runtime.device=" + name);
    return wanted_device_type(c.runtime.device, cuda_devices);
  };
  EXPECT_EQ(type("auto", 2), c10::kCUDA);
  EXPECT_EQ(type("auto", 0), c10::kCPU);  // no GPU: the CPU
  EXPECT_EQ(type("cpu", 4), c10::kCPU);
  EXPECT_EQ(type("cuda", 0), c10::kCUDA);  // asked for: setup_runtime then says none is there
  EXPECT_EQ(type("privateuseone", 0), c10::kPrivateUse1);
  // The config refuses anything else, a device among them (each rank's follows from what it sees).
  EXPECT_ERROR(type("cuda:1", 2), "runtime.device");
  EXPECT_ERROR(type("gpu", 2), "runtime.device");
}

// CUDA on several ranks needs the NCCL plugin: without it every rank stops
// at start-up (setup_runtime, before the run folder) with this line.
TEST(Runtime, CudaCollectivesWithoutTheNcclPluginAreRefused) {
  auto missing = [] { return std::string(R"({"error": "libsmoe_nccl.so: cannot open shared object file"})"); };
  EXPECT_EQ(nccl_refusal(c10::kCUDA, 2, false, missing),
            "runtime.device is cuda on 2 ranks, which needs smoe's NCCL plugin: libsmoe_nccl.so: cannot open shared "
            "object file (rebuild with NCCL's headers, or set runtime.device=cpu)");
  EXPECT_NE(
      nccl_refusal(c10::kCUDA, 4, false, [] { return std::string("not json"); }).find("its versions are unreadable"),
      std::string::npos);
  EXPECT_EQ(nccl_refusal(c10::kCUDA, 2, false, [] { return std::string(R"({"nccl": "2.22.3"})"); }),
            "");                                               // the plugin loads
  EXPECT_EQ(nccl_refusal(c10::kCUDA, 1, false, missing), "");  // one rank: no collective
  EXPECT_EQ(nccl_refusal(c10::kCUDA, 2, true, missing), "");   // a shared GPU: MPI
  EXPECT_EQ(nccl_refusal(c10::kCPU, 2, false, missing), "");
  // This build's own answer: a CPU-only build has no plugin.
  if (!comm::nccl_plugin_built()) {
    EXPECT_NE(nccl_refusal(c10::kCUDA, 2, false, comm::nccl_plugin_versions), "");
  }
}

// setup_runtime on `ranks` thread ranks of one node; each rank's result or error.
struct Started {
  std::vector<RuntimeInfo> infos;
  std::vector<std::string> errors;
};
Started start(int ranks, DeviceKind device) {
  Started out;
  out.infos.resize(static_cast<size_t>(ranks));
  out.errors.resize(static_cast<size_t>(ranks));
  RuntimeConfig c;
  c.threads = 1;
  c.device = device;
  c.stall_timeout_s = 0;
  c.memory_budget_mb = 64;
  c.device_memory_budget_mb = 0;
  comm::run_ranks(ranks, [&](comm::Communicator& comm) {
    const auto r = static_cast<size_t>(comm.rank());
    try {
      out.infos[r] = setup_runtime(c, comm, comm.rank(), ranks);
    } catch (const Error& e) {
      out.errors[r] = e.what();
    }
  });
  return out;
}

TEST(Runtime, CpuRanks) {
  const Started s = start(2, DeviceKind::cpu);
  for (const auto& info : s.infos) {
    EXPECT_EQ(info.device, c10::Device(c10::kCPU));
    EXPECT_FALSE(info.device_shared);  // the CPU is not a device that NCCL would refuse to share
  }
  EXPECT_EQ(s.errors, (std::vector<std::string>{"", ""}));
}

TEST(Runtime, AMissingDeviceStopsEveryRankWithTheSameLine) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has a GPU";
  const Started s = start(2, DeviceKind::cuda);
  for (const auto& e : s.errors)
    EXPECT_NE(e.find("runtime.device is cuda but no cuda device is available on rank 0"), std::string::npos) << e;
}

TEST(Runtime, RanksSharingTheFakeAcceleratorRunTheirCollectivesThroughTheHost) {
  // The fake accelerator (linked into this binary) has one device: two ranks
  // share it, deliberately, and say so.
  const Started s = start(2, DeviceKind::privateuseone);
  EXPECT_EQ(s.errors, (std::vector<std::string>{"", ""}));
  for (const auto& info : s.infos) {
    EXPECT_EQ(info.device, c10::Device(c10::kPrivateUse1, 0));
    EXPECT_TRUE(info.device_shared);
  }
  ASSERT_EQ(s.infos[0].notes.size(), 1u);
  EXPECT_NE(s.infos[0].notes[0].find("ranks share a privateuseone device"), std::string::npos) << s.infos[0].notes[0];
  EXPECT_TRUE(s.infos[1].notes.empty());  // said once

  // A collective on device tensors goes through host copies and lands back
  // on the device.
  const long calls = testing::fake_accelerator_calls();
  comm::run_ranks(2, [&](comm::Communicator& comm) {
    at::Tensor t = at::full({3}, comm.rank() + 1.0, at::TensorOptions().device(testing::fake_accelerator()));
    comm::allreduce(comm, t);
    EXPECT_EQ(t.device(), c10::Device(c10::kPrivateUse1, 0));
    EXPECT_TRUE(at::equal(t.cpu(), at::full({3}, 3.0)));
  });
  EXPECT_GT(testing::fake_accelerator_calls(), calls);  // at::full ran on the device
}

TEST(Runtime, ARouterWithDeviceCollectivesOffRefusesCudaBuffers) {
  testing::FakeDevice::Group devices;
  comm::ThreadGroup group(1);
  comm::DeviceRouter router(group.communicator(0), [&](comm::Communicator& host, int index) {
    return std::make_unique<testing::FakeDevice>(host, index, devices);
  });
  EXPECT_TRUE(router.takes_device_buffers());
  router.set_device_collectives(false);
  int64_t v = 1;
  EXPECT_ERROR(router.allreduce(comm::Buffer{&v, 1, comm::DType::i64, comm::Device{true, 0}}, comm::ReduceOp::sum),
               "a CUDA buffer reached the communicator while device collectives are off");
  EXPECT_EQ(devices.created.load(), 0);
}

// More ranks than a stage can use is reported with the idle share.
TEST(RankUse, BaseStageMicroBatchesAgainstRanks) {
  // The paper configs before: batch = micro-batch = 128, one rank works per step.
  EXPECT_EQ(base_rank_use(128, 128, 8).work, 1);
  EXPECT_DOUBLE_EQ(base_rank_use(128, 128, 8).idle, 0.875);
  EXPECT_EQ(base_idle_warning(128, 128, 8),
            "base: 8 ranks but 1 micro-batch per step (base.batch_size 128 / base.micro_batch 128): 88% of the ranks' "
            "time idles; set base.micro_batch to 16 or less to use every rank (results depend on micro_batch, not on "
            "the rank count)");
  EXPECT_DOUBLE_EQ(base_rank_use(128, 32, 8).idle, 0.5);
  EXPECT_DOUBLE_EQ(base_rank_use(100, 32, 4).idle, 0.0);  // 4 micro-batches, the last one short
  EXPECT_EQ(base_idle_warning(128, 16, 8), "");
  EXPECT_EQ(base_idle_warning(128, 128, 1), "");
}

TEST(RankUse, ExpertsStageExpertsAgainstRanks) {
  // The paper's 20 experts on 32 ranks: 12 ranks idle.
  EXPECT_DOUBLE_EQ(experts_rank_use(20, 32).idle, 0.375);
  EXPECT_EQ(experts_idle_warning(20, 32),
            "experts: 32 ranks but 20 experts to train (experts.count): 12 ranks idle through the stage (38% of the "
            "ranks' time); start at most 20 ranks for this stage");
  EXPECT_EQ(experts_idle_warning(4, 5),
            "experts: 5 ranks but 4 experts to train (experts.count): 1 rank idles "
            "through the stage (20% of the ranks' time); start at most 4 ranks for this "
            "stage");
  EXPECT_EQ(experts_idle_warning(20, 8), "");
}

}  // namespace
}  // namespace smoe::pipeline
