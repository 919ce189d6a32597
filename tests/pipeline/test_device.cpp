// The GPU path without a GPU: the quick pipeline on the fake accelerator
// (tests/common/fake_accelerator.cpp), a device whose operators fail, as
// CUDA's do, when a tensor they get is still on the CPU. Its kernels are the
// CPU's, so a run on it must give the CPU run's results bit for bit: the
// same checkpoints (run.json's hashes) and the same report.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <functional>
#include <set>

#include "comm/tensor_collectives.h"
#include "comm/thread_communicator.h"
#include "common/expect_error.h"
#include "common/fake_accelerator.h"
#include "common/temp_dir.h"
#include "quick_run.h"
#include "train/checkpoint.h"

namespace smoe::testing {
namespace {

// What describes the run rather than its results: times, memory, where it
// ran and on how many ranks. (An optimiser state's bytes record the device
// its tensors were on, as libtorch's archives do; it loads onto the rank's
// device, see ResumeLoadsTheOptimiserStateOntoTheRanksDevice.)
bool measures_the_machine(const std::string& key) {
  static const std::set<std::string> keys = {
      "seconds",           "stages",         "peak_rss_mb", "inference_time", "runtime",      "ranks", "rank",
      "images_per_second", "rows_on_rank_0", "device",      "provenance",     "optim_sha256", "comm",  "stage_comm"};
  return keys.count(key) || key.find("seconds") != std::string::npos || key.find("device") != std::string::npos;
}

nlohmann::json results_only(const nlohmann::json& j) {
  if (j.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : j) out.push_back(results_only(e));
    return out;
  }
  if (!j.is_object()) return j;
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, v] : j.items())
    if (!measures_the_machine(k)) out[k] = results_only(v);
  return out;
}

// What a run computed: every stage's record in run.json (hashes of what it
// wrote included) and the report, less what measures the machine.
nlohmann::json results(const std::string& run_dir, const nlohmann::json& report) {
  return {{"done", results_only(run_json(run_dir)["done"])}, {"report", results_only(report)}};
}

// The first place where two JSON documents differ, for a readable failure.
std::string first_difference(const nlohmann::json& a, const nlohmann::json& b) {
  const nlohmann::json patch = nlohmann::json::diff(a, b);
  return patch.empty() ? "" : patch[0].dump();
}

class OnTheFakeAccelerator : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
  // The fake accelerator's run on P ranks against the CPU's on P ranks
  // (what depends on P, such as a data-parallel epoch's batch-norm
  // statistics before calibration, is the same on both).
  void same_as_cpu(const std::vector<std::string>& overrides) {
    const Config c = quick_config(quick_dataset(tmp.path()), overrides);
    const std::string name = std::to_string(runs++);
    for (int ranks : {1, 2}) {
      const std::string cpu_dir = tmp.path() + "/cpu" + name + "-" + std::to_string(ranks);
      const std::string fake_dir = tmp.path() + "/fake" + name + "-" + std::to_string(ranks);
      const nlohmann::json cpu = results(cpu_dir, train_quick(c, cpu_dir, ranks));
      const long calls = fake_accelerator_calls();
      const nlohmann::json fake =
          results(fake_dir, train_quick(c, fake_dir, ranks, pipeline::OpenMode::fresh, fake_accelerator()));
      EXPECT_GT(fake_accelerator_calls(), calls + 1000);  // it did run there
      EXPECT_EQ(first_difference(cpu, fake), "") << ranks << " ranks";
    }
  }
  TempDir tmp;
  int runs = 0;
};

// What makes the fake a test of placement: an operator given a device
// tensor and a CPU one fails as on a GPU (a 0-dim CPU tensor, a scalar,
// excepted as CUDA excepts it); explicit copies work.
TEST(FakeAccelerator, AnOperatorGivenACpuTensorFailsAsOnAGpu) {
  const at::Tensor d = torch::ones({2, 3}, torch::TensorOptions().device(fake_accelerator()));
  const at::Tensor h = torch::ones({2, 3});
  auto fails = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const c10::Error& e) {
      return std::string(e.what()).find("Expected all tensors to be on the same device") != std::string::npos;
    }
    return false;
  };
  EXPECT_TRUE(fails([&] { (void)(d + h); }));
  EXPECT_TRUE(fails([&] { (void)d.index_select(0, torch::tensor({1}, torch::kLong)); }));
  EXPECT_TRUE(fails([&] { (void)torch::mm(d, h.t()); }));
  torch::nn::Linear on_device(3, 4);
  on_device->to(fake_accelerator());
  EXPECT_TRUE(fails([&] { (void)on_device->forward(h); }));
  EXPECT_EQ((d * torch::tensor(2.0f)).device(), fake_accelerator());  // a CPU scalar is fine
  EXPECT_TRUE(at::equal((d + h.to(fake_accelerator())).cpu(), h * 2));
  EXPECT_EQ(on_device->forward(h.to(fake_accelerator())).device(), fake_accelerator());
}

TEST_F(OnTheFakeAccelerator, AlgorithmOne) { same_as_cpu({}); }

// The experts' trunk features, cached in RAM, are kept on the device when
// they fit runtime.device_memory_budget_mb (the same results either way,
// AlgorithmOne above); with a budget of 0 they stay on the host.
TEST_F(OnTheFakeAccelerator, TrunkFeaturesOnTheDeviceWithinItsBudget) {
  const std::string data = quick_dataset(tmp.path());
  for (const auto& [budget, where] : {std::pair{"2048", "privateuseone:0"}, std::pair{"0", "cpu"}}) {
    const std::string dir = tmp.path() + "/budget-" + budget;
    train_quick(quick_config(data, {std::string("runtime.device_memory_budget_mb=") + budget}), dir, 1,
                pipeline::OpenMode::fresh, fake_accelerator());
    EXPECT_EQ(run_json(dir)["done"]["experts"]["trunk_cache_device"], where) << budget;
  }
}

// experts.augment: no trunk cache; each batch is read and augmented on the
// host by a loader thread, ahead, and the trunk runs on the device.
TEST_F(OnTheFakeAccelerator, AugmentedExperts) { same_as_cpu({"experts.augment=true"}); }

TEST_F(OnTheFakeAccelerator, EmMode) { same_as_cpu({"scheme=em", "em.steps=2"}); }

TEST_F(OnTheFakeAccelerator, JointScheme) {
  same_as_cpu({"scheme=joint", "experts.arch=small_cnn", "experts.branch_after=0", "gate.kind=cnn", "model.width=3",
               "model.hidden=[12,8]", "joint.epochs=1", "joint.batch_size=64", "joint.micro_batch=16",
               "joint.importance=0.2", "joint.similarity_same=0.05", "joint.similarity_diff=0.02"});
}

// float16 off a GPU: float32 passes with dynamic loss scaling in every
// loop, the data-parallel base stage's included (each micro-batch unscaled
// before the exact sum). Scaling by powers of two is exact: the float32
// run's results, on the CPU and on the fake accelerator.
TEST_F(OnTheFakeAccelerator, Float16WithLossScalingGivesTheFloat32Results) {
  const std::string data = quick_dataset(tmp.path());
  const Config full = quick_config(data, {});
  const Config half = quick_config(data, {"base.precision=float16", "experts.precision=float16",
                                          "ensembler.precision=float16", "gate.precision=float16"});
  const nlohmann::json a = results(tmp.path() + "/f32", train_quick(full, tmp.path() + "/f32", 2));
  for (const c10::Device& device : {c10::Device(c10::kCPU), fake_accelerator()}) {
    const std::string dir = tmp.path() + "/f16-" + device.str();
    nlohmann::json b = results(dir, train_quick(half, dir, 2, pipeline::OpenMode::fresh, device));
    EXPECT_EQ(b["done"]["base"]["skipped_steps"], 0);
    EXPECT_EQ(first_difference(a["report"], b["report"]), "") << device;
    for (const auto& [stage, rec] : a["done"].items()) {
      if (rec.contains("sha256")) {
        EXPECT_EQ(b["done"][stage]["sha256"], rec["sha256"]) << stage << " " << device;
      }
    }
  }
}

// The data-parallel step's exact gradient sum reads nothing back from the
// device while micro-batches are added (a GPU would wait at every read): a
// bad gradient is reported by the step's allreduce, its one read, instead.
TEST(ExactSumOnADevice, ReadsNothingBackUntilTheStepsAllreduce) {
  const auto on_device = torch::TensorOptions().device(fake_accelerator());
  comm::ExactSum sum({torch::zeros({5}, on_device)});
  const long reads = fake_accelerator_host_reads();
  for (int i = 0; i < 3; ++i) sum.add({torch::full({5}, 0.25f, on_device)}, "gradient of parameter");
  EXPECT_EQ(fake_accelerator_host_reads(), reads);
  comm::run_ranks(1, [&](comm::Communicator& c) { sum.allreduce(c); });
  at::Tensor out = torch::zeros({5}, on_device);
  sum.result_into({out}, 1.0);
  EXPECT_TRUE(torch::equal(out.cpu(), torch::full({5}, 0.75f)));

  sum.zero();
  sum.add({torch::full({5}, NAN, on_device)}, "gradient of parameter");
  sum.add({torch::full({5}, 3e6f, on_device)}, "gradient of parameter");
  EXPECT_ERROR(comm::run_ranks(1, [&](comm::Communicator& c) { sum.allreduce(c); }),
               "exact sum of gradient of parameters over 1 ranks: 2 additions held a value that is not finite (nan or "
               "inf) or above 1048576: training diverged");
}

// A resumed job puts every rank's optimiser state on that rank's device,
// whichever device wrote it: written on the CPU, loaded by an optimiser on
// the device (its next step would fail on CPU buffers), and the other way.
TEST(OptimiserState, LoadsOntoTheDeviceOfItsParameters) {
  for (const auto& [from, to] :
       {std::pair{c10::Device(c10::kCPU), fake_accelerator()}, std::pair{fake_accelerator(), c10::Device(c10::kCPU)}}) {
    at::Tensor w = torch::ones({3}, torch::TensorOptions().device(from)).requires_grad_(true);
    torch::optim::SGD written({w}, torch::optim::SGDOptions(0.1).momentum(0.9));
    w.sum().backward();
    written.step();
    const std::string bytes = train::optimizer_state(written);

    at::Tensor v = w.detach().to(to).requires_grad_(true);
    torch::optim::SGD loaded({v}, torch::optim::SGDOptions(0.1).momentum(0.9));
    train::load_optimizer_state(loaded, bytes, "state");
    ASSERT_EQ(loaded.state().size(), 1u);
    const auto& momentum = static_cast<torch::optim::SGDParamState&>(*loaded.state().begin()->second).momentum_buffer();
    EXPECT_EQ(momentum.device(), to);
    v.sum().backward();
    loaded.step();
    EXPECT_TRUE(torch::allclose(v.detach().cpu(), w.detach().cpu() - 0.1 * (0.9 + 1)));
  }
}

// A job stopped after the base stage's first epoch resumes on the fake
// accelerator to the CPU's uninterrupted result.
TEST_F(OnTheFakeAccelerator, ResumesToTheUninterruptedResult) {
  const Config c = quick_config(quick_dataset(tmp.path()), {"base.epochs=2"});
  const nlohmann::json whole = results(tmp.path() + "/whole", train_quick(c, tmp.path() + "/whole", 2));
  const std::string stopped = tmp.path() + "/stopped";
  setenv("SMOE_FAULT", "stage:base-epoch-1", 1);
  EXPECT_ANY_THROW(train_quick(c, stopped, 2, pipeline::OpenMode::fresh, fake_accelerator()));
  unsetenv("SMOE_FAULT");
  const nlohmann::json resumed =
      results(stopped, train_quick(c, stopped, 2, pipeline::OpenMode::resume, fake_accelerator()));
  EXPECT_EQ(run_json(stopped)["done"]["base"]["resumed_after_epoch"], 1);
  nlohmann::json a = whole, b = resumed;
  for (auto* j : {&a, &b}) (*j)["done"]["base"].erase("resumed_after_epoch");
  EXPECT_EQ(first_difference(a, b), "");
}

}  // namespace
}  // namespace smoe::testing
