#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "common/expect_error.h"
#include "models/torch_compat.h"
#include "train/expert_trainer.h"
#include "train/loss_scaler.h"
#include "train/precision.h"
#include "train/sgd_loop.h"
#include "train/trainer_options.h"

namespace smoe::train {
namespace {

Precision named(const std::string& name) { return options::from_name<Precision>(name).value(); }

TEST(Precision, PlanFollowsTheInstructionSet) {
  const c10::Device cpu(c10::kCPU);
  EXPECT_EQ(plan_precision(named("float32"), cpu).used, Precision::float32);
  const PrecisionPlan bf = plan_precision(named("bfloat16"), cpu);
  EXPECT_EQ(bf.requested, Precision::bfloat16);
  if (cpu_has_native_bf16()) {
    EXPECT_EQ(options::name(bf.used), "bfloat16");
    EXPECT_EQ(bf.reason, "");
  } else {
    EXPECT_EQ(options::name(bf.used), "float32");
    EXPECT_NE(bf.reason.find("avx512_bf16"), std::string::npos) << bf.reason;
  }
  // A name that is none of them is refused when the config loads (StageChecks).
  // float16: loss scaling wherever it is asked for; float32 passes off a GPU.
  const PrecisionPlan half = plan_precision(named("float16"), cpu);
  EXPECT_TRUE(half.loss_scaling);
  EXPECT_EQ(options::name(half.used), "float32");
  EXPECT_NE(half.reason.find("loss scaling still on"), std::string::npos) << half.reason;
  // auto: the fastest native type, silently.
  const PrecisionPlan best = plan_precision(named("auto"), cpu);
  EXPECT_EQ(options::name(best.used), cpu_has_native_bf16() ? "bfloat16" : "float32");
  EXPECT_FALSE(best.loss_scaling);
  EXPECT_EQ(best.reason, "");
}

// The dynamic loss scaler, PyTorch's GradScaler rule: scaled loss, exact
// unscaling, a skipped step and a halved scale on an inf or a nan, a doubled
// scale after growth_interval good steps in a row.
TEST(LossScaler, SkipsHalvesAndGrows) {
  LossScaler s(true, {1024.0, 2.0, 0.5, 3});
  at::Tensor w = torch::ones({2}).requires_grad_(true);
  s.scaled((w * torch::tensor({3.0f, 5.0f})).sum()).backward();
  EXPECT_TRUE(at::equal(w.grad(), torch::tensor({3.0f * 1024, 5.0f * 1024})));
  EXPECT_TRUE(s.unscale({w}));
  EXPECT_TRUE(at::equal(w.grad(), torch::tensor({3.0f, 5.0f})));  // exact: the scale is a power of two
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 1024.0);
  s.update(false);  // the third good step in a row
  EXPECT_EQ(s.scale(), 2048.0);
  for (float bad : {INFINITY, NAN}) {
    w.mutable_grad() = torch::tensor({1.0f, bad});
    EXPECT_FALSE(s.unscale({w}));
    s.update(true);
  }
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_EQ(s.skipped_steps(), 2);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 512.0);  // a skipped step restarted the count
  s.restore(64.0, 2);
  s.update(false);
  EXPECT_EQ(s.scale(), 128.0);
  // Disabled (float32, bfloat16): nothing changes.
  LossScaler off;
  EXPECT_FALSE(off.enabled());
  at::Tensor l = torch::tensor(2.5f);
  EXPECT_TRUE(off.scaled(l).equal(l));
  w.mutable_grad() = torch::tensor({1.0f, INFINITY});
  EXPECT_TRUE(off.unscale({w}));
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
    AutocastScope outer(Precision::bfloat16, cpu);
    {
      AutocastScope inner(Precision::bfloat16, cpu);
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
    AutocastScope off(Precision::float32, cpu);
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
  o.optim = ExpertsConfig{}.optim;
  o.optim.epochs = 8;
  o.optim.lr = 0.1;
  o.optim.batch_size = 32;
  o.optim.precision = named(precision);
  o.optim.channels_last = channels_last;
  o.seed = 5;
  o.log_every = 1000;
  return train_expert(*expert, ExpertInputs(RowCache::from_rows(t.features)), t.labels, t.weights, o);
}

// float16 off a GPU: float32 passes with the loss scaler on. Scaling by a
// power of two and back is exact, so the expert is the float32 one bit for
// bit, and its loop reports the scale.
TEST(LossScaler, AFloat16RequestOnTheCpuTrainsTheFloat32Weights) {
  Toy t = toy();
  models::Backbone a{nullptr}, b{nullptr};
  const LoopStats full = train_toy(t, "float32", a);
  const LoopStats half = train_toy(t, "float16", b);
  EXPECT_EQ(half.precision, "float32");
  EXPECT_EQ(half.loss_scale, 65536.0);
  EXPECT_EQ(half.skipped_steps, 0);
  EXPECT_EQ(full.loss_scale, 1.0);
  for (size_t i = 0; i < a->parameters().size(); ++i)
    EXPECT_TRUE(at::equal(a->parameters()[i], b->parameters()[i])) << i;
}

// A step whose gradients overflow is skipped, the scale halves, and the loop
// goes on: the weights are those of the other steps alone.
TEST(LossScaler, AnSgdLoopSkipsTheStepThatOverflowed) {
  auto run = [](const std::string& precision, bool overflow) {
    at::Tensor w = torch::zeros({2}).requires_grad_(true);
    LoopSpec spec;
    spec.stage = "toy";
    spec.n = 4;
    spec.optim = ExpertsConfig{}.optim;
    spec.optim.epochs = 1;
    spec.optim.batch_size = 1;
    spec.optim.lr = 0.1;
    spec.optim.momentum = 0;
    spec.optim.weight_decay = 0;
    spec.optim.schedule = LrSchedule::constant;
    spec.optim.precision = named(precision);
    spec.log_every = 1000;
    int calls = 0;
    LoopStats st = sgd_loop({w}, spec, [&](const std::vector<int64_t>&, int64_t) {
      ++calls;
      if (calls == 2) return overflow ? (w * INFINITY).sum() : (w * 0).sum();  // no step either way
      return (w - 1).pow(2).sum();
    });
    return std::make_pair(w.detach().clone(), st);
  };
  const auto [w_half, half] = run("float16", true);
  const auto [w_full, full] = run("float32", false);
  EXPECT_EQ(half.skipped_steps, 1);
  EXPECT_EQ(half.loss_scale, 32768.0);
  EXPECT_TRUE(at::equal(w_half, w_full)) << w_half << w_full;
  EXPECT_TRUE(torch::isfinite(w_half).all().item<bool>());
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
