// Each extension point takes a new implementation as one class plus one
// registration: a throwaway implementation is registered here and the quick
// pipeline runs with it, chosen by its config name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <numeric>

#include "cluster/initial_gate.h"
#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "models/ensembler.h"
#include "models/expert.h"
#include "models/gate.h"
#include "pipeline/config_reference.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "quick_run.h"
#include "train/checkpoint.h"
#include "train/row_cache.h"

namespace smoe::testing {
namespace {

// Registers `name` in `registry` for the scope of a test.
template <typename R, typename E>
struct Registered {
  Registered(R& registry, std::string name, E entry) : r(registry), n(std::move(name)) { r.add(n, std::move(entry)); }
  ~Registered() { r.remove(n); }
  R& r;
  std::string n;
};

// ---------------------------------------------------------------- initial gate
// Sample i goes to expert i mod K, whatever its embedding (the rows a rank
// is given come with their global ids).
class RoundRobinGate : public cluster::InitialGate {
 public:
  cluster::InitialGateFit fit(const cluster::InitialGateInputs& in) const override {
    cluster::InitialGateFit f;
    f.g0 = torch::one_hot(in.ids % in.kmeans.k, in.kmeans.k).to(torch::kFloat);
    f.record = {{"toy", "round_robin"}};
    return f;
  }
};

TEST(Registries, AnInitialGateIsOneClassAndOneRegistration) {
  Registered reg(cluster::initial_gates(), "round_robin",
                 std::shared_ptr<const cluster::InitialGate>(std::make_shared<RoundRobinGate>()));
  TempDir dir;
  const std::string run = dir / "run";
  auto report = train_quick(quick_config(quick_dataset(dir.path()), {"cluster.method=round_robin"}), run);
  auto done = run_json(run)["done"];
  EXPECT_EQ(done["cluster"]["toy"], "round_robin");
  std::vector<int64_t> ids(256);
  std::iota(ids.begin(), ids.end(), 0);
  at::Tensor g0 = train::RowCache::open(run + "/g0.f32", 256, {3}, train::RowCacheMode::memory)->rows(ids);
  EXPECT_TRUE(torch::equal(g0.argmax(1), torch::arange(256) % 3));
  // The gate (linear, with no centroids to start from) was still fitted to g0; each expert got a third of the mass.
  EXPECT_TRUE(done["gate"].contains("kl_final"));
  for (const auto& e : report["experts"]) EXPECT_NEAR(e["gate_mass"].get<double>(), 1.0 / 3, 0.01);
  EXPECT_GT(report["moe"]["bagging"]["accuracy"].get<double>(), 0.0);
}

// ---------------------------------------------------------------- gate
// A two-layer gate on the embedding.
class MlpGateImpl : public models::GateModule {
 public:
  MlpGateImpl(int64_t in, int64_t experts) : in_(in), k_(experts) {
    hidden = register_module("hidden", torch::nn::Linear(in, 16));
    out = register_module("out", torch::nn::Linear(16, experts));
  }
  at::Tensor forward(const models::GateFeatures& f) override {
    return out->forward(torch::relu(hidden->forward(f.embedding)));
  }
  int64_t forward_macs() const override { return in_ * 16 + 16 * k_; }
  torch::nn::Linear hidden{nullptr}, out{nullptr};
  int64_t in_, k_;
};

TEST(Registries, AGateKindIsOneClassAndOneRegistration) {
  Registered reg(models::gate_kinds(), "mlp", models::GateFactory([](const models::GateSpec& s) -> models::Gate {
                   return std::make_shared<MlpGateImpl>(s.embedding_dim, s.experts);
                 }));
  TempDir dir;
  const std::string run = dir / "run";
  auto report = train_quick(quick_config(quick_dataset(dir.path()), {"gate.kind=mlp"}), run);
  auto gate = train::load_state(run + "/gate.pt");
  EXPECT_EQ(gate.at("hidden.weight").sizes(), (at::IntArrayRef{16, 32}));  // 8w = 32 pre-logits
  EXPECT_EQ(run_json(run)["done"]["gate"]["kind"], "mlp");
  // The report's costs count this gate: top-1 = base + gate + expert.
  const double base = report["base"]["macs"], top1 = report["moe"]["no_ensembling"]["macs"];
  EXPECT_GT(top1, base + 32 * 16 + 16 * 3);
}

// ---------------------------------------------------------------- expert architecture
// A linear probe on the trunk's pooled features, instead of the base's blocks.
class LinearProbeImpl : public models::ExpertModule {
 public:
  LinearProbeImpl(int64_t channels, int64_t classes) : c_(channels), n_(classes) {
    fc = register_module("probe", torch::nn::Linear(channels, classes));
  }
  at::Tensor forward(const at::Tensor& trunk) override {
    return fc->forward(torch::adaptive_avg_pool2d(trunk, {1, 1}).flatten(1));
  }
  int64_t forward_macs() const override { return c_ * n_; }
  torch::nn::Linear fc{nullptr};
  int64_t c_, n_;
};

TEST(Registries, AnExpertArchitectureIsOneClassAndOneRegistration) {
  Registered reg(
      models::expert_architectures(), "probe", models::ExpertFactory([](const models::ExpertSpec& s) -> models::Expert {
        models::Backbone base(s.base);
        return std::make_shared<LinearProbeImpl>(base->input_shape_of(s.branch_after)[0], s.base.num_classes);
      }));
  TempDir dir;
  const std::string run = dir / "run";
  auto report = train_quick(quick_config(quick_dataset(dir.path()), {"experts.arch=probe"}), run);
  auto expert = train::load_state(run + "/experts/expert-000.pt");
  EXPECT_EQ(expert.size(), 2u);                                           // probe.weight, probe.bias
  EXPECT_EQ(expert.at("probe.weight").sizes(), (at::IntArrayRef{4, 8}));  // 4 classes, 2w channels into block 3
  // One probe per sample costs 8 x 4 MACs beyond the base model and the linear gate (32 x 3).
  const double base = report["base"]["macs"], top1 = report["moe"]["no_ensembling"]["macs"];
  EXPECT_DOUBLE_EQ(top1 - base, 32 * 3 + 8 * 4);
}

// What the pipeline may ask of an architecture comes with its registration,
// not from its name: experts.depth and experts.fuse apply to an architecture
// registered as a copy of the base model's blocks, whatever it is called,
// and to no other.
TEST(Registries, AnExpertArchitectureSaysWhetherItCopiesTheBaseModelsBlocks) {
  Registered probe(models::expert_architectures(), "probe",
                   models::ExpertFactory([](const models::ExpertSpec&) -> models::Expert { return nullptr; }));
  Registered copy(
      models::expert_architectures(), "branch_copy",
      models::ExpertFactory([](const models::ExpertSpec& s) { return models::expert_architectures().get("branch")(s); },
                            /*copies_base_blocks=*/true));
  TempDir dir;
  const std::string data = quick_dataset(dir.path());
  EXPECT_ERROR(pipeline::check_config(quick_config(data, {"experts.arch=probe", "experts.depth=18"})),
               "config key 'experts.depth' is 18");
  EXPECT_ERROR(pipeline::check_config(quick_config(data, {"experts.arch=probe", "experts.fuse=2"})),
               "config key 'experts.fuse' is 2");
  pipeline::check_config(quick_config(data, {"experts.arch=branch_copy", "experts.depth=18"}));
  pipeline::check_config(quick_config(data, {"experts.arch=branch_copy", "experts.fuse=2"}));
}

// ---------------------------------------------------------------- ensembler
// The renormalised geometric mean of the two predictions; nothing to train.
class GeometricMean : public models::Ensembler {
 public:
  at::Tensor probs(const at::Tensor& b, const at::Tensor& e, models::EnsemblerModule*) const override {
    at::Tensor p = torch::sqrt(torch::softmax(b, 1) * torch::softmax(e, 1));
    return p / p.sum(1, true);
  }
  double macs(int64_t classes) const override { return static_cast<double>(classes); }
};

TEST(Registries, AnEnsemblerIsOneClassAndOneRegistration) {
  Registered reg(models::ensemblers(), "geometric",
                 std::shared_ptr<const models::Ensembler>(std::make_shared<GeometricMean>()));
  TempDir dir;
  const std::string run = dir / "run";
  auto report =
      train_quick(quick_config(quick_dataset(dir.path()), {"ensembler.kind=geometric", "eval.taus=[0, 1]"}), run);
  // Evaluated beside the built-in rules (Table 6), and used by the anytime model.
  for (const char* rule : {"no_ensembling", "bagging", "stacking", "geometric", "top2"})
    EXPECT_TRUE(report["moe"].contains(rule)) << rule;
  EXPECT_EQ(report["ensembler"], "geometric");
  EXPECT_DOUBLE_EQ(report["moe"]["geometric"]["macs"].get<double>(),
                   report["moe"]["no_ensembling"]["macs"].get<double>() + 4);
  // tau = 0 runs every expert, each with one ensembler: its cost has K x 4 ensembler MACs.
  const double base = report["base"]["macs"];
  EXPECT_GT(report["anytime"][0]["macs"].get<double>(), base + 3 * 4);
}

// ---------------------------------------------------------------- training scheme
// A stage that records the initial gate's mass per expert, and a scheme that
// ends with it (no experts, no evaluation).
class GateMassStage : public pipeline::Stage {
 public:
  std::string name() const override { return "gate_mass"; }
  std::vector<std::string> keys() const override { return {}; }
  nlohmann::json run(pipeline::RunState& s) override {
    const train::RowCache& g0 = s.open_g0();
    at::Tensor mass = (g0.sum_rows(100) / static_cast<double>(g0.size())).contiguous();
    return {{"mass", std::vector<double>(mass.data_ptr<double>(), mass.data_ptr<double>() + mass.numel())}};
  }
};

TEST(Registries, ATrainingSchemeIsAListOfStagesAndOneRegistration) {
  Registered stage(pipeline::stages(), "gate_mass",
                   pipeline::StageFactory([] { return std::make_unique<GateMassStage>(); }));
  Registered scheme(pipeline::schemes(), "clusters_only",
                    std::vector<std::string>{"base", "embed", "cluster", "gate_mass"});
  TempDir dir;
  const std::string run = dir / "run";
  Config cfg = quick_config(quick_dataset(dir.path()), {"scheme=clusters_only"});
  EXPECT_TRUE(train_quick(cfg, run).is_null());  // no eval stage, no report
  auto done = run_json(run)["done"];
  for (const char* s : {"base", "embed", "cluster", "gate_mass"}) EXPECT_TRUE(done.contains(s)) << s;
  EXPECT_FALSE(done.contains("experts"));
  double total = 0;
  for (double m : done["gate_mass"]["mass"].get<std::vector<double>>()) total += m;
  EXPECT_NEAR(total, 1.0, 1e-5);
  EXPECT_EQ(pipeline::scheme_plan(cfg).back().name, "gate_mass");
}

TEST(Registries, UnknownNamesListTheKnownOnes) {
  TempDir dir;
  const std::string data = quick_dataset(dir.path());
  auto check = [&](const std::string& set) { pipeline::check_config(quick_config(data, {set})); };
  EXPECT_ERROR(check("cluster.method=spectral"),
               "cluster.method: unknown initial gate 'spectral' (known: dfcp, kmeans, per_class)");
  EXPECT_ERROR(check("gate.kind=switch"),
               "gate.kind: unknown gate kind 'switch' (known: attentive, class_routing, cnn, linear, noisy, tempered)");
  EXPECT_ERROR(
      check("experts.arch=resnext"),
      "experts.arch: unknown expert architecture 'resnext' (known: alexnet, bagnet, branch, densenet, mlp, small_cnn)");
  EXPECT_ERROR(check("ensembler.kind=voting"), "ensembler.kind: unknown ensembler 'voting' (known: bagging, stacking)");
  // A key that names entries of another key's registry is the one named.
  EXPECT_ERROR(check("experts.archs=[branch, vit]"),
               "experts.archs: unknown expert architecture 'vit' (known: alexnet, bagnet, branch, densenet, mlp, "
               "small_cnn)");
  EXPECT_ERROR(check("scheme=lemur"),
               "scheme: unknown training scheme 'lemur' (known: algorithm1, algorithm1_finetune, dfcp, em, joint, "
               "joint_distill)");
}

// ------------------------------------------------------ configuration reference
// docs/configuration.md is what `smoe config --keys --markdown` prints: a
// key added, renamed or re-documented, or a name registered, changes both.
TEST(ConfigReference, TheDocsPageIsTheGeneratedOne) {
  const std::string page = read_file(source_dir() + "/docs/configuration.md");
  EXPECT_TRUE(page == pipeline::config_reference_markdown())
      << "docs/configuration.md differs from the code's reference: regenerate it with "
         "build/bin/smoe config --keys --markdown > docs/configuration.md";
}

// A key that names a registry entry lists the registry's names, a new one
// included, under every key that names that registry's entries; every key
// has a doc.
TEST(ConfigReference, ListsEveryRegisteredNameUnderItsKeys) {
  Registered reg(models::gate_kinds(), "mlp", models::GateFactory([](const models::GateSpec& s) -> models::Gate {
                   return std::make_shared<MlpGateImpl>(s.embedding_dim, s.experts);
                 }));
  std::map<std::string, std::vector<std::string>> accepted;
  for (const auto& r : pipeline::config_reference()) {
    EXPECT_FALSE(r.info.doc.empty()) << r.info.key;
    accepted[r.info.key] = r.accepted;
  }
  for (const char* key : {"gate.kind", "distill.gate_kind"}) {
    const auto& names = accepted.at(key);
    EXPECT_NE(std::find(names.begin(), names.end(), "mlp"), names.end()) << key;
  }
  for (const std::string& key : pipeline::registry_keys())
    EXPECT_TRUE(accepted.count(key)) << key << ": not a config key";
  EXPECT_EQ(accepted.at("scheme"), pipeline::schemes().names());
}

}  // namespace
}  // namespace smoe::testing
