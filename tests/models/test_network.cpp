#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/expect_error.h"
#include "models/ensembler.h"
#include "models/gate.h"
#include "models/network.h"

namespace smoe::models {
namespace {

NetworkSpec small(const std::string& arch = "tiny_resnet", int64_t depth = 10) {
  NetworkSpec s;
  s.arch = *options::from_name<NetworkArch>(arch);
  s.depth = depth;
  s.width = 4;
  s.input = {1, 8, 8};
  s.num_classes = 10;
  return s;
}

TEST(Network, MacsOfAKnownLayerStack) {
  Backbone net(small());
  // stem: 4 out x 8x8 x (1 in x 3x3)                              = 2304
  // stage 1: two 3x3 convs 4->4 at 8x8: 2 x 4x64x4x9              = 18432
  // stages 2-4 halve the resolution and double the width; each is
  //   conv1 (stride 2) + conv2 + 1x1 shortcut conv                = 4608 + 9216 + 512 = 14336
  // head: 32 pre-logits x 10 classes                              = 320
  EXPECT_EQ(net->macs(0, 1), 2304);
  EXPECT_EQ(net->macs(1, 2), 18432);
  EXPECT_EQ(net->macs(2, 3), 14336);
  EXPECT_EQ(net->macs(3, 4), 14336);
  EXPECT_EQ(net->macs(4, 5), 14336);
  EXPECT_EQ(net->head_macs(), 320);
  EXPECT_EQ(net->macs(0, 5) + net->head_macs(), 64064);
}

TEST(Network, PlainCnnMacs) {
  Backbone net(small("plain_cnn"));
  // stem 1->4 @8x8: 2304; block1 4->4 @8x8 then pool: 9216; block2 4->8 @4x4 then pool: 4608;
  // block3 8->16 @2x2: 4608; block4 16->32 @2x2: 18432
  EXPECT_EQ(net->macs(0, 5), 2304 + 9216 + 4608 + 4608 + 18432);
}

class Shapes : public ::testing::TestWithParam<std::tuple<std::string, int64_t>> {};

TEST_P(Shapes, AnalyticShapesMatchTheForwardPass) {
  auto [arch, depth] = GetParam();
  NetworkSpec s = small(arch, depth);
  s.input = {3, 13, 11};  // odd sizes exercise rounding
  Backbone net(s);
  net->eval();
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({2, 3, 13, 11});
  for (int64_t b = 0; b <= NetworkSpec::kBlocks; ++b) {
    Shape expect = net->input_shape_of(b);
    EXPECT_EQ(x.sizes().slice(1).vec(), expect) << "input of block " << b;
    if (b < NetworkSpec::kBlocks) x = net->blocks(x, b, b + 1);
  }
  EXPECT_EQ(net->classify(net->prelogits(x)).sizes(), (at::IntArrayRef{2, 10}));
}

INSTANTIATE_TEST_SUITE_P(Archs, Shapes,
                         ::testing::Values(std::make_tuple("tiny_resnet", 10), std::make_tuple("tiny_resnet", 18),
                                           std::make_tuple("tiny_resnet", 34), std::make_tuple("plain_cnn", 10)));

TEST(Network, ExpertStartsAsTheBaseModelsTail) {
  torch::manual_seed(0);
  Backbone base(small());
  base->eval();
  for (int64_t branch = 0; branch < NetworkSpec::kBlocks; ++branch) {
    Backbone expert(small(), branch);
    expert->copy_from(*base);
    expert->eval();
    torch::NoGradGuard no_grad;
    at::Tensor x = torch::randn({3, 1, 8, 8});
    at::Tensor trunk = base->blocks(x, 0, branch);
    EXPECT_TRUE(torch::allclose(expert->forward(trunk), base->forward(x), 1e-5, 1e-6)) << "branch " << branch;
    EXPECT_EQ(expert->macs(branch, 5), base->macs(branch, 5));
  }
  // Parameter names are shared, so a checkpoint of an expert names base layers.
  Backbone expert(small(), 3);
  for (const auto& p : expert->named_parameters())
    EXPECT_TRUE(p.key().rfind("block3", 0) == 0 || p.key().rfind("block4", 0) == 0 || p.key().rfind("fc", 0) == 0)
        << p.key();
}

// experts.depth (Royer et al. Table 1): a deeper expert on a tr10 base starts
// as the base's tail (its extra residual blocks as the identity), and a
// shallower one on a tr18 base starts from the first block of each stage;
// both have their own depth's MACs.
TEST(Network, ExpertsOfAnotherDepthStartFromTheBasesBlocks) {
  torch::manual_seed(1);
  NetworkSpec s10 = small(), s18 = small();
  s10.depth = 10;
  s18.depth = 18;
  Backbone base10(s10), base18(s18);
  base10->eval();
  base18->eval();
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({3, 1, 8, 8});

  Expert deeper = expert_architectures().get("branch")(ExpertSpec{s10, 3, 0, 18});
  deeper->init_from_base(*base10);
  deeper->eval();
  EXPECT_TRUE(torch::allclose(deeper->forward(base10->blocks(x, 0, 3)), base10->forward(x), 1e-5, 1e-6));
  EXPECT_EQ(deeper->forward_macs(), Backbone(s18, 3)->forward_macs());
  EXPECT_GT(deeper->forward_macs(), base10->macs(3, NetworkSpec::kBlocks) + base10->head_macs());
  // The extra blocks are trainable, not frozen at zero: their other weights are drawn.
  bool drawn = false;
  for (const auto& p : deeper->named_parameters())
    if (p.key().find(".1.conv1.weight") != std::string::npos) drawn = drawn || p.value().abs().sum().item<double>() > 0;
  EXPECT_TRUE(drawn);

  Expert shallower = expert_architectures().get("branch")(ExpertSpec{s18, 3, 0, 10});
  shallower->init_from_base(*base18);
  for (const auto& p : shallower->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), *base18->named_parameters().find(p.key()))) << p.key();
  EXPECT_EQ(shallower->forward_macs(), Backbone(s10, 3)->forward_macs());
}

TEST(Network, BadSpecsAreNamed) {
  EXPECT_ERROR(Backbone(small(), 5), "experts.branch_after must be in [0, 5) for a 5-block network, got 5");
  NetworkSpec s = small();
  s.depth = 12;
  EXPECT_ERROR(Backbone{s}, "model.depth: expected 10, 18 or 34, got 12");
  s = small();
  s.input = {1, 4, 4};
  EXPECT_ERROR(Backbone{s},
               "model input must be [C, H, W] with C >= 1 and H, W >= 8 (the network halves them down to 1 "
               "x 1), got [1, 4, 4]");
}

TEST(Heads, StackingStartsAsTheLogitAverageAndBaggingAveragesProbabilities) {
  StackingImpl st(3);
  torch::NoGradGuard no_grad;
  at::Tensor a = torch::tensor({{1.0, 2.0, 3.0}}), b = torch::tensor({{3.0, 0.0, -1.0}});
  EXPECT_TRUE(torch::allclose(st.forward(a, b), (a + b) / 2));
  at::Tensor p = bagging_probs(a, b);
  EXPECT_TRUE(torch::allclose(p, (torch::softmax(a, 1) + torch::softmax(b, 1)) / 2));
  EXPECT_NEAR(p.sum().item<double>(), 1.0, 1e-6);
  // The registered rules: bagging is free and untrained, stacking trains d_k (2C x C MACs).
  EXPECT_EQ(ensemblers().get("bagging")()->build(3), nullptr);
  EXPECT_EQ(ensemblers().get("stacking")()->macs(3), 18);
  auto d = ensemblers().get("stacking")()->build(3);
  EXPECT_TRUE(torch::allclose(ensemblers().get("stacking")()->probs(a, b, d.get()), torch::softmax((a + b) / 2, 1)));
  EXPECT_ERROR(ensemblers().get("voting"), "ensembler.kind: unknown ensembler 'voting' (known: bagging, stacking)");
  Gate g = gate_kinds().get("linear")(GateSpec{32, 10, 4});
  EXPECT_EQ(g->forward_macs(), 128);
}

TEST(Heads, LinearGateStartsFromTheClosedFormOfTheSoftAssignment) {
  // softmax(W x + b) with W = 2c / T, b = -|c|^2 / T equals softmax(-|x - c|^2 / T).
  torch::manual_seed(3);
  at::Tensor c = torch::randn({4, 8}), x = torch::randn({16, 8});
  LinearGateImpl g(8, 4);
  ASSERT_TRUE(g.init_from_centroids(c, 0.5));
  torch::NoGradGuard no_grad;
  at::Tensor d = (x.unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(2);
  EXPECT_TRUE(torch::allclose(g.probabilities({x, torch::zeros({16, 3})}), torch::softmax(-d / 0.5, 1), 1e-4, 1e-5));
}

TEST(Experts, TheBranchArchitectureIsTheBasesTailAndStartsFromItsWeights) {
  NetworkSpec s = small();
  Backbone base(s);
  Expert e = expert_architectures().get("branch")(ExpertSpec{s, 3, 0});
  EXPECT_EQ(e->forward_macs(), base->macs(3, NetworkSpec::kBlocks) + base->head_macs());
  e->init_from_base(*base);
  torch::NoGradGuard no_grad;
  at::Tensor x = torch::randn({2, s.input[0], s.input[1], s.input[2]});
  base->eval();
  e->eval();
  EXPECT_TRUE(torch::allclose(e->forward(base->blocks(x, 0, 3)), base->forward(x)));
  EXPECT_ERROR(
      expert_architectures().get("vit"),
      "experts.arch: unknown expert architecture 'vit' (known: alexnet, bagnet, branch, densenet, mlp, small_cnn)");
}

}  // namespace
}  // namespace smoe::models
