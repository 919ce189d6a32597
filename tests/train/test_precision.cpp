#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "common/expect_error.h"
#include "core/config.h"
#include "models/torch_compat.h"
#include "train/expert_trainer.h"
#include "train/precision.h"

namespace smoe::train {
namespace {

TEST(Precision, PlanFollowsTheInstructionSet) {
  const c10::Device cpu(c10::kCPU);
  EXPECT_EQ(plan_precision("float32", cpu).used, "float32");
  const PrecisionPlan bf = plan_precision("bfloat16", cpu);
  EXPECT_EQ(bf.requested, "bfloat16");
  if (cpu_has_native_bf16()) {
    EXPECT_EQ(bf.used, "bfloat16");
    EXPECT_EQ(bf.reason, "");
  } else {
    EXPECT_EQ(bf.used, "float32");
    EXPECT_NE(bf.reason.find("avx512_bf16"), std::string::npos) << bf.reason;
  }
  EXPECT_ERROR(plan_precision("fp8", cpu), "expected float32 or bfloat16");
}

// The autocast scope itself, whatever the CPU (oneDNN's reference kernels
// on a tiny convolution): bfloat16 inside, float32 after, nesting kept, and
// gradients of float32 weights in float32.
TEST(Precision, AutocastScopeRunsConvolutionsInBfloat16) {
  const c10::Device cpu(c10::kCPU);
  torch::manual_seed(1);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(2, 3, 3).padding(1));
  at::Tensor x = torch::randn({2, 2, 5, 5});
  at::Tensor y;
  {
    AutocastScope outer("bfloat16", cpu);
    {
      AutocastScope inner("bfloat16", cpu);
      EXPECT_EQ(conv->forward(x).scalar_type(), at::kBFloat16);
    }
    EXPECT_TRUE(compat::autocast_enabled(c10::DeviceType::CPU));  // the outer scope still holds
    y = conv->forward(x);
    EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  }
  EXPECT_FALSE(compat::autocast_enabled(c10::DeviceType::CPU));
  EXPECT_EQ(conv->forward(x).scalar_type(), at::kFloat);
  y.to(at::kFloat).sum().backward();
  EXPECT_EQ(conv->weight.grad().scalar_type(), at::kFloat);
  {
    AutocastScope off("float32", cpu);
    EXPECT_EQ(conv->forward(x).scalar_type(), at::kFloat);
  }
}

struct Toy {
  models::NetworkSpec spec;
  models::Backbone base{nullptr};
  at::Tensor features, labels, weights;
};

Toy toy() {
  Toy t;
  t.spec.width = 8;  // channels-last needs 8 output channels or more (train/precision.h)
  t.spec.input = {1, 8, 8};
  t.spec.num_classes = 2;
  torch::manual_seed(3);
  t.base = models::Backbone(t.spec);
  const models::Shape in = t.base->input_shape_of(3);
  t.features = torch::randn({160, in[0], in[1], in[2]});
  t.labels = (t.features.select(1, 0).mean({1, 2}) > 0).to(torch::kLong);  // learnable from the features
  t.weights = torch::ones({160});
  return t;
}

LoopStats train_toy(Toy& t, const std::string& precision, models::Backbone& expert, bool channels_last = false) {
  expert = models::Backbone(t.spec, 3);
  expert->copy_from(*t.base);
  ExpertTrainOptions o;
  o.optim = Config::defaults().experts.optim;
  o.optim.epochs = 8;
  o.optim.lr = 0.1;
  o.optim.batch_size = 32;
  o.optim.precision = precision;
  o.optim.channels_last = channels_last;
  o.seed = 5;
  o.log_every = 1000;
  return train_expert(*expert, ExpertInputs(RowCache::from_rows(t.features)), t.labels, t.weights, o);
}

// Where the CPU lacks bfloat16 instructions a bfloat16 request trains in
// float32: the same weights bit for bit, and the stats say float32.
TEST(Precision, ABfloat16RequestFallsBackCleanlyWithoutTheInstructions) {
  if (cpu_has_native_bf16()) GTEST_SKIP() << "this CPU has bfloat16 instructions: no fallback to test";
  Toy t = toy();
  models::Backbone a{nullptr}, b{nullptr};
  EXPECT_EQ(train_toy(t, "float32", a).precision, "float32");
  EXPECT_EQ(train_toy(t, "bfloat16", b).precision, "float32");
  auto pa = a->named_parameters();
  for (auto& p : b->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), pa[p.key()])) << p.key();
}

// Channels-last weights while training: the same expert up to summation
// order, the weights back in the usual layout afterwards (and so in the
// checkpoints), the scope restoring them when training throws, and left off
// for networks with convolutions of fewer than 8 output channels.
TEST(Precision, ChannelsLastTrainsTheSameNetworkInTheUsualLayoutAfterwards) {
  Toy t = toy();
  models::Backbone a{nullptr}, b{nullptr};
  train_toy(t, "float32", a, false);
  train_toy(t, "float32", b, true);
  auto pa = a->named_parameters();
  for (auto& p : b->named_parameters()) {
    EXPECT_TRUE(p.value().is_contiguous()) << p.key();
    EXPECT_LT((p.value() - pa[p.key()]).abs().max().item<double>(), 1e-4) << p.key();
  }
  at::Tensor narrow = torch::randn({4, 2, 3, 3}), w = torch::randn({8, 2, 3, 3});
  {
    ChannelsLastScope scope({narrow, w}, true);  // a convolution of 4 output channels: left alone
    EXPECT_FALSE(scope.active());
    EXPECT_TRUE(w.is_contiguous());
  }
  try {
    ChannelsLastScope scope({w}, true);
    EXPECT_TRUE(w.is_contiguous(at::MemoryFormat::ChannelsLast));
    throw std::runtime_error("training failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(w.is_contiguous());
}

// On a CPU with AVX-512 BF16 or AMX: a bfloat16 expert trains (finite loss,
// float32 weights) and learns what the float32 one learns.
TEST(Precision, Bfloat16TrainingLearnsWhatFloat32Learns) {
  if (!cpu_has_native_bf16())
    GTEST_SKIP() << "this CPU has no bfloat16 instructions (avx512_bf16 / amx_bf16 absent from /proc/cpuinfo): "
                    "bfloat16 training is not exercised here";
  Toy t = toy();
  models::Backbone a{nullptr}, b{nullptr};
  const LoopStats fp32 = train_toy(t, "float32", a), bf16 = train_toy(t, "bfloat16", b);
  EXPECT_EQ(bf16.precision, "bfloat16");
  EXPECT_TRUE(std::isfinite(bf16.final_loss));
  for (auto& p : b->parameters()) EXPECT_EQ(p.scalar_type(), at::kFloat);
  torch::NoGradGuard no_grad;
  a->eval();
  b->eval();
  const double acc_a = (a->forward(t.features).argmax(1) == t.labels).to(torch::kDouble).mean().item<double>();
  const double acc_b = (b->forward(t.features).argmax(1) == t.labels).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(acc_a, 0.9);
  EXPECT_NEAR(acc_b, acc_a, 0.05);
}

}  // namespace
}  // namespace smoe::train
