#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/expect_error.h"
#include "models/moe.h"

namespace smoe::models {
namespace {

NetworkSpec spec() {
  NetworkSpec s;
  s.width = 4;
  s.input = {1, 12, 12};
  s.num_classes = 3;
  return s;
}

// The MoE forward pass is the parts composed: the gate on the base model's
// (normalised) pre-logits, every expert on the trunk, each ensembler on the
// base and expert logits; its MACs are the parts' MACs.
TEST(Moe, ForwardComposesTheBaseTheGateTheExpertsAndTheEnsemblers) {
  torch::manual_seed(5);
  const int64_t K = 2, branch = 3;
  Backbone base(spec());
  Gate gate = gate_kinds().get("linear")({spec().prelogit_dim(), 3, K});
  MoeModel moe(base, branch, /*normalize_embedding=*/true, gate, K);
  std::vector<Expert> experts;
  std::vector<EnsemblerNet> stackings;
  for (int64_t k = 0; k < K; ++k) {
    experts.push_back(expert_architectures().get("branch")({spec(), branch, k}));
    stackings.push_back(ensemblers().get("stacking")()->build(3));
    moe.set_expert(k, experts.back(), {{"stacking", stackings.back()}});
  }
  at::Tensor x = torch::randn({5, 1, 12, 12});
  MoeOutputs out = moe.forward(x);
  EXPECT_EQ(out.gate_probs.sizes(), (at::IntArrayRef{5, K}));
  EXPECT_EQ(out.expert_logits.sizes(), (at::IntArrayRef{5, K, 3}));
  EXPECT_TRUE(torch::allclose(out.gate_probs.sum(1), torch::ones({5})));

  torch::NoGradGuard no_grad;
  base->eval();
  at::Tensor trunk = base->blocks(x, 0, branch);
  at::Tensor pre = base->prelogits(base->blocks(trunk, branch, NetworkSpec::kBlocks));
  EXPECT_TRUE(torch::allclose(out.base_logits, base->classify(pre)));
  at::Tensor normalized = pre / pre.norm(2, 1, true);
  EXPECT_TRUE(torch::allclose(out.gate_probs, torch::softmax(gate->forward({normalized, out.base_logits}), 1)));
  for (int64_t k = 0; k < K; ++k) {
    at::Tensor e = experts[k]->forward(trunk);
    EXPECT_TRUE(torch::allclose(out.expert_logits.select(1, k), e));
    EXPECT_TRUE(torch::allclose(out.ensembled.at("bagging").select(1, k), bagging_probs(out.base_logits, e)));
    EXPECT_TRUE(torch::allclose(out.ensembled.at("stacking").select(1, k),
                                torch::softmax(stackings[k]->forward(out.base_logits, e), 1)));
  }
  EXPECT_EQ(moe.base_macs(), base->macs(0, NetworkSpec::kBlocks) + base->head_macs());
  EXPECT_EQ(moe.expert_macs(1), base->macs(branch, NetworkSpec::kBlocks) + base->head_macs());
  EXPECT_EQ(moe.gate_macs(), spec().prelogit_dim() * K);
  EXPECT_EQ(moe.ensembler_macs("stacking"), 2 * 3 * 3);
}

// The sparse inference paths (what the report times) give what the dense
// forward pass gives for the same rule.
TEST(Moe, PredictRunsOnlyTheRoutedExpertsAndMatchesTheDenseForward) {
  torch::manual_seed(8);
  const int64_t K = 3, branch = 3;
  Backbone base(spec());
  MoeModel moe(base, branch, true, gate_kinds().get("linear")({spec().prelogit_dim(), 3, K}), K);
  for (int64_t k = 0; k < K; ++k)
    moe.set_expert(k, expert_architectures().get("branch")({spec(), branch, k}),
                   {{"stacking", ensemblers().get("stacking")()->build(3)}});
  at::Tensor x = torch::randn({16, 1, 12, 12});
  MoeOutputs out = moe.forward(x);
  at::Tensor base_probs = torch::softmax(out.base_logits, 1);
  EXPECT_TRUE(torch::allclose(moe.predict(x, MoeModel::Predict::base), base_probs));
  for (const std::string name : {"bagging", "stacking"}) {
    at::Tensor k = out.gate_probs.argmax(1);
    at::Tensor expected = out.ensembled.at(name).gather(1, k.view({-1, 1, 1}).expand({-1, 1, 3})).squeeze(1);
    EXPECT_TRUE(torch::allclose(moe.predict(x, MoeModel::Predict::top1, name), expected, 1e-5, 1e-6)) << name;
  }
  {  // top-2: the two most probable experts' own probabilities, weighted by their gate values
    auto [g, k] = out.gate_probs.topk(2, 1);
    at::Tensor own = torch::softmax(out.expert_logits, 2);
    auto pick = [&](int64_t i) {
      return own.gather(1, k.select(1, i).view({-1, 1, 1}).expand({-1, 1, 3})).squeeze(1) * g.select(1, i).unsqueeze(1);
    };
    EXPECT_TRUE(torch::allclose(moe.predict(x, MoeModel::Predict::top2), pick(0) + pick(1), 1e-5, 1e-6));
  }
  // tau at the median of the samples' largest alpha (some samples exit
  // early), and at the largest second-largest alpha (a sample runs two experts).
  at::Tensor alpha = out.gate_probs * (1 - std::get<0>(base_probs.max(1))).unsqueeze(1);
  at::Tensor top = std::get<0>(alpha.topk(2, 1));
  for (double tau : {top.select(1, 0).median().item<double>(), top.select(1, 1).max().item<double>()}) {
    at::Tensor active = alpha >= tau;
    at::Tensor early = active.logical_not().all(1);
    at::Tensor mix = ((out.gate_probs * active.to(torch::kFloat)).unsqueeze(2) * out.ensembled.at("bagging")).sum(1);
    EXPECT_TRUE(torch::allclose(moe.predict(x, MoeModel::Predict::anytime, "bagging", tau),
                                torch::where(early.unsqueeze(1), base_probs, mix), 1e-5, 1e-6))
        << "tau " << tau;
  }
  EXPECT_TRUE((alpha >= top.select(1, 0).median()).logical_not().all(1).any().item<bool>());
  EXPECT_TRUE(((alpha >= top.select(1, 1).max()).sum(1) > 1).any().item<bool>());
}

TEST(Moe, ARankHoldingSomeExpertsCannotRunTheWholeModel) {
  Backbone base(spec());
  MoeModel moe(base, 3, false, gate_kinds().get("linear")({spec().prelogit_dim(), 3, 2}), 2);
  moe.set_expert(1, expert_architectures().get("branch")({spec(), 3, 1}), {});
  EXPECT_FALSE(moe.has_expert(0));
  EXPECT_TRUE(moe.has_expert(1));
  EXPECT_ERROR(moe.forward(torch::randn({1, 1, 12, 12})), "MoE forward without expert 0");
}

}  // namespace
}  // namespace smoe::models
