#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/expect_error.h"
#include "models/fused_branch.h"
#include "models/network.h"

namespace smoe::models {
namespace {

NetworkSpec spec_of(const std::string& arch, int64_t depth) {
  NetworkSpec s;
  s.arch = *options::from_name<NetworkArch>(arch);
  s.depth = depth;
  s.width = 4;
  s.input = {2, 16, 16};
  s.num_classes = 5;
  return s;
}

// K experts of one spec with different weights and BatchNorm statistics.
std::vector<std::shared_ptr<BackboneImpl>> make_experts(const NetworkSpec& spec, int64_t first, int64_t k) {
  std::vector<std::shared_ptr<BackboneImpl>> out;
  for (int64_t i = 0; i < k; ++i) {
    torch::manual_seed(100 + i);
    auto e = std::make_shared<BackboneImpl>(spec, first);
    torch::NoGradGuard no_grad;
    for (auto& b : e->named_buffers())
      if (b.value().is_floating_point()) b.value().uniform_(0.5, 1.5);
    out.push_back(e);
  }
  return out;
}

// The fused network computes the K experts' logits, in training mode (batch
// statistics) and in eval mode (each expert's running statistics), for
// tiny-ResNets of two depths and the plain CNN, branching at different blocks.
TEST(FusedBranch, ComputesWhatTheExpertsComputeOneByOne) {
  for (auto [arch, depth, first] : {std::tuple<std::string, int64_t, int64_t>{"tiny_resnet", 10, 3},
                                    {"tiny_resnet", 18, 2},
                                    {"plain_cnn", 10, 1}}) {
    const NetworkSpec spec = spec_of(arch, depth);
    auto experts = make_experts(spec, first, 3);
    FusedBranch fused(experts);
    torch::manual_seed(7);
    const Shape in = experts[0]->input_shape_of(first);
    at::Tensor x = torch::randn({6, in[0], in[1], in[2]});
    for (bool training : {false, true}) {
      fused->train(training);
      for (auto& e : experts) e->train(training);
      torch::NoGradGuard no_grad;
      at::Tensor together = fused->forward(x);
      ASSERT_EQ(together.sizes(), (std::vector<int64_t>{6, 3, 5}));
      for (int64_t k = 0; k < 3; ++k) {
        at::Tensor alone = experts[static_cast<size_t>(k)]->forward(x);
        EXPECT_TRUE(torch::allclose(together.select(1, k), alone, 1e-4, 1e-5))
            << arch << depth << " expert " << k << (training ? " train" : " eval") << " max diff "
            << (together.select(1, k) - alone).abs().max().item<double>();
      }
    }
  }
}

// Stacking then unstacking gives back every parameter and buffer bit for bit.
TEST(FusedBranch, UnstackRestoresEachExpertExactly) {
  const NetworkSpec spec = spec_of("tiny_resnet", 10);
  auto experts = make_experts(spec, 3, 4);
  FusedBranch fused(experts);
  auto fresh = make_experts(spec, 3, 4);
  for (auto& e : fresh)
    for (auto& p : e->parameters()) p.data().zero_();
  fused->unstack_into(fresh);
  for (size_t k = 0; k < experts.size(); ++k) {
    auto want = experts[k]->named_parameters();
    for (auto& p : fresh[k]->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), want[p.key()])) << p.key();
    auto want_b = experts[k]->named_buffers();
    for (auto& b : fresh[k]->named_buffers()) EXPECT_TRUE(torch::equal(b.value(), want_b[b.key()])) << b.key();
  }
}

TEST(FusedBranch, RefusesExpertsOfDifferentArchitectures) {
  auto a = make_experts(spec_of("tiny_resnet", 10), 3, 1);
  auto b = make_experts(spec_of("tiny_resnet", 18), 3, 1);
  EXPECT_ERROR(FusedBranch(std::vector<std::shared_ptr<BackboneImpl>>{a[0], b[0]}),
               "one architecture and branch point");
  EXPECT_ERROR(FusedBranch(std::vector<std::shared_ptr<BackboneImpl>>{}), "none given");
}

}  // namespace
}  // namespace smoe::models
