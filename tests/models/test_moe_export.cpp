// The exported MoE (models/moe_export.h): a TorchScript file that loads
// without smoe and computes what MoeModel::predict_routed computes, bit for
// bit, for every rule, several tau and batch sizes other than the traced
// one; its rule and tau change after loading; bad inputs are refused in one
// line.
#include <gtest/gtest.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "common/temp_dir.h"
#include "models/joint_moe.h"
#include "models/moe.h"
#include "models/moe_export.h"

namespace smoe::models {
namespace {

NetworkSpec spec() {
  NetworkSpec s;
  s.width = 4;
  s.input = {1, 12, 12};
  s.num_classes = 3;
  return s;
}

struct Exported {
  testing::TempDir tmp;
  std::unique_ptr<MoeModel> moe;
  ExportOptions options;
  std::string path;
};

std::unique_ptr<Exported> make_exported(const std::string& ensembler) {
  torch::manual_seed(11);
  auto e = std::make_unique<Exported>();
  const int64_t K = 3, branch = 3;
  e->moe = std::make_unique<MoeModel>(Backbone(spec()), branch, true,
                                      gate_kinds().get("linear")({spec().prelogit_dim(), 3, K}), K);
  for (int64_t k = 0; k < K; ++k)
    e->moe->set_expert(k, expert_architectures().get("branch")({spec(), branch, k}),
                       {{"stacking", ensemblers().get("stacking")()->build(3)}});
  e->options.rule = "anytime";
  e->options.tau = 0.05;
  e->options.ensembler = ensembler;
  e->options.input_shape = {1, 12, 12};
  e->options.pixel_scale = {1.0f / (255.0f * 0.3f)};
  e->options.pixel_shift = {-0.4f / 0.3f};
  e->options.classes = {"a", "b", "c"};
  e->options.provenance = {{"run", "runs/x"}, {"config_sha256", "abc"}};
  e->path = e->tmp.path() + "/moe.pt";
  export_moe(*e->moe, e->options, e->path);
  return e;
}

at::Tensor pixels(int64_t batch, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 256, {batch, 1, 12, 12}, torch::kUInt8);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// With the TorchScript executor's graph optimisations off, the file runs
// the traced kernels as smoe does: bit for bit. With them on (the default,
// what a user gets), libtorch 2.x fuses element-wise operations after the
// first calls (seen on 2.14: scores differ in the last bits from the third
// call on), so there the scores agree to float rounding and the
// predictions, experts and exits are equal.
TEST(MoeExport, TheFileComputesWhatSmoeComputesForEveryRuleTauAndBatchSize) {
  for (const bool optimized : {false, true}) {
    const torch::jit::GraphOptimizerEnabledGuard optimizer(optimized);
    for (const std::string ensembler : {"bagging", "stacking"}) {
      auto e = make_exported(ensembler);
      torch::jit::Module file = torch::jit::load(e->path);
      for (int64_t batch : {1, 7, 64}) {
        const at::Tensor images = pixels(batch, batch);
        const at::Tensor x = images.to(torch::kFloat) * e->options.pixel_scale[0] + e->options.pixel_shift[0];
        for (const auto& rule : export_rules()) {
          for (double tau : {0.0, 0.02, 0.05, 0.2, 1.0}) {
            if (rule != "anytime" && tau > 0) continue;
            file.setattr("rule", rule);
            file.setattr("tau", tau);
            const auto got = file.run_method("predict", images).toTuple()->elements();
            const auto want = e->moe->predict_routed(x, static_cast<MoeModel::Predict>(&rule - &export_rules()[0]),
                                                     ensembler, torch::tensor(tau, torch::kDouble));
            const at::Tensor forward = file.forward({images}).toTensor();
            const std::string what =
                fmt::format("{} {} batch {} tau {} optimised {}", ensembler, rule, batch, tau, optimized);
            if (!optimized) {
              EXPECT_TRUE(torch::equal(got[0].toTensor(), want.probs)) << what;
              EXPECT_TRUE(torch::equal(got[1].toTensor(), want.weight)) << what;
              EXPECT_TRUE(torch::equal(forward, want.probs)) << what;
            } else {
              EXPECT_TRUE(torch::allclose(got[0].toTensor(), want.probs, 1e-5, 1e-6)) << what;
              EXPECT_TRUE(torch::allclose(got[1].toTensor(), want.weight, 1e-5, 1e-6)) << what;
              EXPECT_TRUE(torch::equal(got[0].toTensor().argmax(1), want.probs.argmax(1))) << what;
              EXPECT_TRUE(torch::equal(got[1].toTensor() > 0, want.weight > 0)) << what;
            }
            EXPECT_TRUE(torch::equal(got[2].toTensor(), want.early)) << what;
          }
        }
      }
    }
  }
}

// Between tau = 0 (every expert with a positive weight runs) and tau = 1
// (every sample exits early) the routing changes, and the file follows tau
// set after loading: the test above is not comparing constants.
TEST(MoeExport, TauSetAfterLoadingChangesTheRouting) {
  auto e = make_exported("bagging");
  torch::jit::Module file = torch::jit::load(e->path);
  const at::Tensor images = pixels(64, 3);
  file.setattr("tau", 0.0);
  const at::Tensor early0 = file.run_method("predict", images).toTuple()->elements()[2].toTensor();
  file.setattr("tau", 1.0);
  const at::Tensor early1 = file.run_method("predict", images).toTuple()->elements()[2].toTensor();
  EXPECT_EQ(early0.sum().item<int64_t>(), 0);
  EXPECT_EQ(early1.sum().item<int64_t>(), 64);
}

TEST(MoeExport, CarriesItsMetadataAndRefusesBadInputsInOneLine) {
  auto e = make_exported("stacking");
  torch::jit::ExtraFilesMap extra = {{"smoe.json", ""}};
  torch::jit::Module file = torch::jit::load(e->path, {}, extra);
  const auto meta = nlohmann::json::parse(extra["smoe.json"]);
  EXPECT_EQ(meta["provenance"]["run"], "runs/x");
  EXPECT_EQ(meta["classes"], (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(file.attr("smoe_config_sha256").toStringRef(), "abc");
  EXPECT_EQ(file.attr("num_experts").toInt(), 3);

  const std::string shape = error_of([&] { file.forward({torch::zeros({2, 3, 12, 12})}); });
  EXPECT_NE(shape.find("smoe model: expected images [B, 1, 12, 12] of pixels 0..255, got [2, 3, 12, 12]"),
            std::string::npos)
      << shape;
  file.setattr("rule", std::string("top3"));
  const std::string rule = error_of([&] { file.forward({pixels(2, 0)}); });
  EXPECT_NE(rule.find("smoe model: rule must be base, top1, top2, anytime, got 'top3'"), std::string::npos) << rule;

  ExportOptions bad = e->options;
  bad.rule = "top3";
  EXPECT_NE(error_of([&] { export_moe(*e->moe, bad, e->tmp.path() + "/bad.pt"); }).find("rule 'top3'"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(e->tmp.path() + "/bad.pt"));
}

// A jointly trained MoE (attentive gate: every expert's hidden layer feeds
// it; and a top-2 noisy gate) exports with its own rules, and the file's
// mixture is forward_dense()'s bit for bit, at batch sizes other than the
// traced one; top1 and top2 are the report's (eval/joint_report.h).
TEST(MoeExport, AJointlyTrainedMoeComputesItsMixtureAndRules) {
  NetworkSpec s;
  s.width = 3;
  s.hidden = {10, 6};
  s.input = {1, 12, 12};
  s.num_classes = 4;
  for (const auto& [kind, top_k] : std::vector<std::pair<std::string, int64_t>>{{"attentive", 0}, {"noisy", 2}}) {
    torch::manual_seed(3);
    GateSpec g;
    g.experts = 3;
    g.classes = 4;
    g.input = s.input;
    g.width = 3;
    g.hidden = {10, 6};
    g.expert_hidden = 6;
    std::vector<Expert> experts;
    for (int64_t k = 0; k < 3; ++k) experts.push_back(expert_architectures().get("small_cnn")({s, 0, k}));
    JointMoeImpl moe(gate_kinds().get(kind)(g), experts, top_k);
    testing::TempDir tmp;
    ExportOptions o;
    o.rule = "mixture";
    o.input_shape = {1, 12, 12};
    o.pixel_scale = {1.0f / 255.0f};
    o.pixel_shift = {0.0f};
    const std::string path = tmp.path() + "/joint.pt";
    export_joint_moe(moe, o, path);
    torch::jit::Module file = torch::jit::load(path);
    const torch::jit::GraphOptimizerEnabledGuard exact(false);  // the traced kernels as they are (see above)
    for (int64_t batch : {1, 9}) {
      const at::Tensor images = pixels(batch, batch);
      const at::Tensor x = images.to(torch::kFloat) * o.pixel_scale[0] + o.pixel_shift[0];
      torch::NoGradGuard no_grad;
      moe.eval();
      const JointOutputs want = moe.forward_dense(x);
      file.setattr("rule", std::string("mixture"));
      EXPECT_TRUE(torch::equal(file.forward({images}).toTensor(), want.mixture)) << kind << " batch " << batch;
      const at::Tensor top = want.gate_probs.argmax(1);
      file.setattr("rule", std::string("top1"));
      const auto top1 = file.run_method("predict", images).toTuple()->elements();
      EXPECT_TRUE(torch::equal(top1[0].toTensor().argmax(1),
                               want.expert_logits.argmax(2).gather(1, top.unsqueeze(1)).squeeze(1)))
          << kind;
      EXPECT_TRUE(torch::equal(top1[1].toTensor().argmax(1), top)) << kind;
      file.setattr("rule", std::string("top2"));
      EXPECT_EQ(file.forward({images}).toTensor().sizes(), (at::IntArrayRef{batch, 4}));
    }
    file.setattr("rule", std::string("anytime"));
    const std::string rule = error_of([&] { file.forward({pixels(2, 0)}); });
    EXPECT_NE(rule.find("smoe model: rule must be mixture, top1, top2, got 'anytime'"), std::string::npos) << rule;
  }
}

}  // namespace
}  // namespace smoe::models
