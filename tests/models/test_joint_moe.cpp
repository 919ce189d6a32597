// The jointly trained MoE (models/joint_moe.h), the small CNN and the gates
// that read images (models/cnn_gate.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>

#include "common/expect_error.h"
#include "models/cnn_gate.h"
#include "models/joint_moe.h"
#include "models/network.h"
#include "models/small_cnn.h"

namespace smoe::models {
namespace {

NetworkSpec spec() {
  NetworkSpec s;
  s.width = 3;
  s.hidden = {10, 6};
  s.input = {1, 12, 12};
  s.num_classes = 4;
  return s;
}

GateSpec gate_spec(int64_t experts, int64_t expert_hidden) {
  GateSpec g;
  g.experts = experts;
  g.classes = 4;
  g.input = spec().input;
  g.width = 3;
  g.hidden = {10, 6};
  g.expert_hidden = expert_hidden;
  return g;
}

std::vector<Expert> small_experts(int64_t K) {
  std::vector<Expert> e;
  for (int64_t k = 0; k < K; ++k) e.push_back(expert_architectures().get("small_cnn")({spec(), 0, k}));
  return e;
}

TEST(SmallCnn, ShapesAndMacs) {
  SmallCnnSpec s{{1, 12, 12}, 3, {10, 6}, 4, true};
  SmallCnn net(s);
  EXPECT_EQ(net->forward(torch::randn({2, 1, 12, 12})).sizes(), (std::vector<int64_t>{2, 4}));
  // conv 10x10x3 outputs of 1x3x3; pooled 3x5x5 = 75 -> 10 -> 6 -> 4.
  EXPECT_EQ(net->macs(), 10 * 10 * 3 * 9 + 75 * 10 + 10 * 6 + 6 * 4);
}

// y_hat = sum_e g(e|x) softmax(f_e(x)), a distribution over classes.
TEST(JointMoe, MixtureIsTheGateWeightedSumOfTheExpertsDistributions) {
  torch::manual_seed(2);
  JointMoeImpl moe(gate_kinds().get("cnn")(gate_spec(3, 6)), small_experts(3));
  at::Tensor x = torch::randn({5, 1, 12, 12});
  JointOutputs o = moe.forward(x);
  EXPECT_EQ(o.gate_probs.sizes(), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(o.expert_logits.sizes(), (std::vector<int64_t>{5, 3, 4}));
  at::Tensor manual = torch::zeros({5, 4});
  for (int64_t e = 0; e < 3; ++e)
    manual += o.gate_probs.select(1, e).unsqueeze(1) * torch::softmax(moe.expert(e).forward(x), 1);
  EXPECT_TRUE(torch::allclose(o.mixture, manual, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(o.mixture.sum(1), torch::ones({5}), 1e-5, 1e-6));
  at::Tensor y = torch::tensor({0, 1, 2, 3, 0}, torch::kLong);
  EXPECT_NEAR(mixture_nll(o.mixture, y)[1].item<double>(), -std::log(o.mixture[1][1].item<double>() + 1e-7), 1e-5);
}

// g = softmax_e((h_g W_q) . (h_e W_k) / sqrt(h)), h_e each expert's last hidden layer.
TEST(JointMoe, AttentiveGateAttendsToTheExpertsHiddenLayers) {
  torch::manual_seed(4);
  auto gate = std::make_shared<AttentiveGateImpl>(gate_spec(2, 6));
  JointMoeImpl moe(gate, small_experts(2));
  at::Tensor x = torch::randn({3, 1, 12, 12});
  JointOutputs o = moe.forward(x);
  at::Tensor q = gate->query->forward(gate->net->hidden(x));
  std::vector<at::Tensor> scores;
  for (int64_t e = 0; e < 2; ++e) {
    at::Tensor k = gate->key->forward(moe.expert(e).forward_hidden(x).hidden);
    scores.push_back((q * k).sum(1) / std::sqrt(6.0));
  }
  EXPECT_TRUE(torch::allclose(o.gate_probs, torch::softmax(torch::stack(scores, 1), 1), 1e-5, 1e-6));
  EXPECT_TRUE(gate->needs_expert_hidden());
}

// Distillation starts the plain gate from the attentive gate's trunk: the
// convolution and both hidden layers are copied, the output layer is new.
TEST(JointMoe, APlainGateStartsFromTheAttentiveGatesTrunk) {
  torch::manual_seed(6);
  Gate attentive = gate_kinds().get("attentive")(gate_spec(2, 6));
  Gate plain = gate_kinds().get("cnn")(gate_spec(2, 6));
  EXPECT_EQ(plain->init_from(*attentive), 6);  // conv, fc1, fc2: weights and biases
  auto theirs = attentive->named_parameters();
  for (const auto& p : plain->named_parameters()) {
    if (theirs.contains(p.key())) {
      EXPECT_TRUE(torch::equal(p.value(), theirs[p.key()])) << p.key();
    }
  }
}

// An expert that records the samples it computes (each input image is
// filled with its sample's index).
class RecordingExpert : public ExpertModule {
 public:
  explicit RecordingExpert(int64_t classes) { fc = register_module("fc", torch::nn::Linear(1, classes)); }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor id = x.flatten(1).select(1, 0);
    for (int64_t i = 0; i < id.size(0); ++i) seen.push_back(std::lround(id[i].item<double>()));
    return fc->forward(id.unsqueeze(1));
  }
  int64_t forward_macs() const override { return 4; }
  std::vector<int64_t> seen;
  torch::nn::Linear fc{nullptr};
};

at::Tensor indexed_images(int64_t n) {
  return torch::arange(n, torch::kFloat).view({n, 1, 1, 1}).expand({n, 1, 12, 12}).contiguous();
}

// Top-k dispatch: each expert's forward sees exactly the samples routed to
// it, and g is the softmax over the k kept logits.
TEST(JointMoe, TopKDispatchGivesEachExpertExactlyItsSamples) {
  torch::manual_seed(8);
  const int64_t K = 4, n = 16;
  std::vector<std::shared_ptr<RecordingExpert>> rec;
  std::vector<Expert> experts;
  for (int64_t k = 0; k < K; ++k) {
    rec.push_back(std::make_shared<RecordingExpert>(4));
    experts.push_back(rec.back());
  }
  JointMoeImpl moe(gate_kinds().get("cnn")(gate_spec(K, 0)), experts, /*top_k=*/2);
  JointOutputs o = moe.forward(indexed_images(n));
  EXPECT_TRUE(torch::equal(o.routed.sum(1), torch::full({n}, 2, torch::kLong)));
  for (int64_t k = 0; k < K; ++k) {
    std::vector<int64_t> expected;
    for (int64_t i = 0; i < n; ++i)
      if (o.routed[i][k].item<bool>()) expected.push_back(i);
    EXPECT_EQ(rec[static_cast<size_t>(k)]->seen, expected) << "expert " << k;
  }
  EXPECT_TRUE(torch::equal(o.gate_probs > 0, o.routed));
  EXPECT_TRUE(torch::allclose(o.gate_probs.sum(1), torch::ones({n}), 1e-5, 1e-6));
  // The kept two are the two largest logits, renormalised.
  at::Tensor top = std::get<1>(o.gate_logits.topk(2, 1));
  at::Tensor kept = torch::softmax(o.gate_logits.gather(1, top), 1);
  EXPECT_TRUE(torch::allclose(o.gate_probs.gather(1, top), kept, 1e-5, 1e-6));
}

// With k = K (every expert kept) and no noise, sparse dispatch is dense soft routing.
TEST(JointMoe, TopKWithEveryExpertIsDenseSoftRouting) {
  torch::manual_seed(9);
  Gate gate = gate_kinds().get("noisy")(gate_spec(3, 6));
  auto experts = small_experts(3);
  JointMoeImpl dense(gate, experts, 0), sparse(gate, experts, 3);
  at::Tensor x = torch::randn({6, 1, 12, 12});
  JointOutputs a = dense.forward(x), b = sparse.forward(x);
  EXPECT_TRUE(torch::allclose(a.gate_probs, b.gate_probs, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(a.mixture, b.mixture, 1e-6, 1e-7));
}

// Noisy gates add the given noise in training only; the tempered gate's
// temperature starts at 2 and stays in [0.5, 5].
TEST(JointMoe, NoisyGatesAreNoisyOnlyInTraining) {
  torch::manual_seed(10);
  for (const char* kind : {"noisy", "tempered"}) {
    Gate gate = gate_kinds().get(kind)(gate_spec(3, 6));
    EXPECT_TRUE(gate->uses_noise());
    GateFeatures f;
    f.inputs = torch::randn({5, 1, 12, 12});
    at::Tensor clean = gate->forward(f);
    f.noise = torch::randn({5, 3});
    gate->train();
    EXPECT_FALSE(torch::allclose(gate->forward(f), clean)) << kind;
    gate->eval();
    EXPECT_TRUE(torch::equal(gate->forward(f), clean)) << kind;
  }
  TemperedGateImpl tempered(gate_spec(3, 6));
  EXPECT_NEAR(tempered.temperature(), 2.0, 1e-6);
  {
    torch::NoGradGuard no_grad;
    tempered.log_temperature.fill_(10.0);
  }
  EXPECT_EQ(tempered.temperature(), 5.0);
}

TEST(JointMoe, RefusesAGateThatReadsTheBaseModel) {
  EXPECT_ERROR(JointMoeImpl(gate_kinds().get("linear")({8, 4, 2}), small_experts(2)),
               "needs a gate that reads the experts' input");
}

}  // namespace
}  // namespace smoe::models

namespace smoe::models {
namespace {

// LEMUR's families (models/backbones.h) on images and on a trunk's feature
// maps: the right output shapes, a hidden layer, and MACs counted per layer.
TEST(Backbones, EveryFamilyRunsOnImagesAndTrunkFeatures) {
  torch::manual_seed(11);
  for (const char* arch : {"alexnet", "densenet", "bagnet", "small_cnn", "mlp"})
    for (const std::vector<int64_t>& input : {std::vector<int64_t>{1, 28, 28}, {3, 32, 32}}) {
      NetworkSpec s = spec();
      s.input = input;
      s.width = 4;
      for (int64_t branch : {0, 3}) {
        Expert e = expert_architectures().get(arch)({s, branch, 0});
        const auto in = branch == 0 ? input : Backbone(s)->input_shape_of(branch);
        std::vector<int64_t> shape = {2};
        shape.insert(shape.end(), in.begin(), in.end());
        HiddenAndLogits out = e->forward_hidden(torch::randn(shape));
        EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, 4})) << arch << " branch " << branch;
        EXPECT_EQ(out.hidden.size(1), e->hidden_dim()) << arch;
        EXPECT_GT(e->forward_macs(), 0) << arch;
      }
    }
}

// A shared trunk (LEMUR experiment 1): the gate and the experts read its
// features, its MACs are its blocks', the loss's gradient reaches it, and it
// is frozen with the experts.
TEST(JointMoe, ASharedTrunkFeedsTheGateAndTheExpertsAndTrains) {
  torch::manual_seed(12);
  const NetworkSpec s = spec();
  const int64_t n = 2;
  Trunk trunk(s, n);
  const Shape out = trunk->output_shape();
  EXPECT_EQ(out, input_shape_of(s, n));
  Backbone full(s);
  EXPECT_EQ(trunk->macs(), full->macs(0, n));
  GateSpec g = gate_spec(3, 0);
  g.input = out;
  std::vector<Expert> experts;
  for (int64_t k = 0; k < 3; ++k) experts.push_back(expert_architectures().get("mlp")({s, n, k}));
  JointMoeImpl moe(gate_kinds().get("noisy")(g), experts, /*top_k=*/2, trunk);
  EXPECT_TRUE(moe.has_trunk());
  EXPECT_EQ(moe.trunk_macs(), trunk->macs());
  // The trunk's parameters train with the experts.
  EXPECT_EQ(moe.expert_parameters().size(), trunk->parameters().size() + 3 * experts[0]->parameters().size());
  at::Tensor labels = torch::tensor({0, 1, 2, 3, 0, 1}, torch::kLong);
  JointOutputs o = moe.forward(torch::randn({6, 1, 12, 12}), torch::randn({6, 3}));
  mixture_nll(o.mixture, labels).mean().backward();
  for (auto& p : trunk->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0);
  }
  // Frozen with the experts: no gradient reaches it, the gate's does.
  moe.zero_grad();
  for (auto& p : trunk->parameters()) p.mutable_grad() = at::Tensor();
  JointOutputs f = moe.forward_frozen_experts(torch::randn({6, 1, 12, 12}), torch::randn({6, 3}));
  mixture_nll(f.mixture, labels).mean().backward();
  for (auto& p : trunk->parameters()) EXPECT_FALSE(p.grad().defined() && p.grad().abs().sum().item<double>() > 0);
  double gate_grad = 0;
  for (auto& p : moe.gate().parameters())
    if (p.grad().defined()) gate_grad += p.grad().abs().sum().item<double>();
  EXPECT_GT(gate_grad, 0);
}

TEST(Backbones, AlexNetMacsAreItsLayersMacs) {
  NetworkSpec s = spec();
  s.input = {1, 8, 8};
  s.width = 2;
  s.hidden = {5, 5};
  s.num_classes = 3;
  // conv1 1->2 on 8x8, pool to 4x4; conv2 2->4 on 4x4, pool to 2x2; conv3 4->8 on 2x2; FC 32->5->3.
  const int64_t expected = 1 * 2 * 9 * 64 + 2 * 4 * 9 * 16 + 4 * 8 * 9 * 4 + 32 * 5 + 5 * 3;
  EXPECT_EQ(expert_architectures().get("alexnet")({s, 0, 0})->forward_macs(), expected);
}

}  // namespace
}  // namespace smoe::models
