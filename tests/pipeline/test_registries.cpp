// Each extension point takes a new implementation as one class plus one
// registration: a throwaway implementation is registered here and the quick
// pipeline runs with it, chosen by its config name. Each declares an option
// of its own, in an options struct beside it, named in its registration
// (core/variant_options.h), and the run sets it under the variant's name;
// VariantsNeedNoOtherFile counts the files of the source tree that name
// each one: this file alone.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "cluster/initial_gate.h"
#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "models/ensembler.h"
#include "models/expert.h"
#include "models/gate.h"
#include "pipeline/config_reference.h"
#include "pipeline/finished_run.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "quick_run.h"
#include "train/checkpoint.h"
#include "train/row_cache.h"

namespace smoe::testing {
namespace {

// Registers `name` in `registry` for the scope of a test, with its options'
// defaults if it has options.
template <typename R, typename E>
struct Registered {
  Registered(R& registry, std::string name, E entry, std::shared_ptr<const options::VariantOptions> opts = nullptr)
      : r(registry), n(std::move(name)) {
    r.add(n, std::move(entry), std::move(opts));
  }
  ~Registered() { r.remove(n); }
  R& r;
  std::string n;
};

// The files under the source tree's folders (code, configs, docs, scripts)
// whose text contains `word`, relative to the tree.
std::vector<std::string> files_naming(const std::string& word) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const char* top : {"src", "tests", "configs", "docs", "launch", "slurm", "bench", "data_tools", "cmake"}) {
    const fs::path root = fs::path(source_dir()) / top;
    if (!fs::exists(root)) continue;
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      if (!e.is_regular_file()) continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      if (text.str().find(word) != std::string::npos)
        out.push_back(fs::relative(e.path(), source_dir()).generic_string());
    }
  }
  return out;
}

// ---------------------------------------------------------------- initial gate
// Sample i goes to expert (i + shift) mod K, whatever its embedding (the
// rows a rank is given come with their global ids); shift is its option.
struct IdModuloOptions {
  int64_t shift = 0;
  void describe(options::Table& t) { t.key("shift", shift, "sample i goes to expert (i + shift) mod K").at_least(0); }
};

class IdModuloGate : public cluster::InitialGate {
 public:
  cluster::InitialGateFit fit(const cluster::InitialGateInputs& in) const override {
    const int64_t shift = options::of<IdModuloOptions>(in.options).shift;
    cluster::InitialGateFit f;
    f.g0 = torch::one_hot((in.ids + shift) % in.kmeans.k, in.kmeans.k).to(torch::kFloat);
    f.record = {{"toy", "id_modulo"}};
    return f;
  }
};

TEST(Registries, AnInitialGateIsOneClassAndOneRegistration) {
  Registered reg(cluster::initial_gates(), "id_modulo",
                 std::shared_ptr<const cluster::InitialGate>(std::make_shared<IdModuloGate>()),
                 options::prototype<IdModuloOptions>());
  TempDir dir;
  const std::string run = dir / "run";
  auto report = train_quick(
      quick_config(quick_dataset(dir.path()), {"cluster.method=id_modulo", "cluster.id_modulo.shift=1"}), run);
  auto done = run_json(run)["done"];
  EXPECT_EQ(done["cluster"]["toy"], "id_modulo");
  std::vector<int64_t> ids(256);
  std::iota(ids.begin(), ids.end(), 0);
  at::Tensor g0 = train::RowCache::open(run + "/g0.f32", 256, {3}, train::RowCacheMode::memory)->rows(ids);
  EXPECT_TRUE(torch::equal(g0.argmax(1), (torch::arange(256) + 1) % 3));  // the configured shift, not the default
  // The gate (linear, with no centroids to start from) was still fitted to g0; each expert got a third of the mass.
  EXPECT_TRUE(done["gate"].contains("kl_final"));
  for (const auto& e : report["experts"]) EXPECT_NEAR(e["gate_mass"].get<double>(), 1.0 / 3, 0.01);
  EXPECT_GT(report["moe"]["bagging"]["accuracy"].get<double>(), 0.0);
}

// ---------------------------------------------------------------- gate
// A two-layer gate on the embedding; its hidden width is its option.
struct TwoLayerGateOptions {
  int64_t hidden = 16;
  void describe(options::Table& t) { t.key("hidden", hidden, "units of the hidden layer").at_least(1); }
};

class TwoLayerGateImpl : public models::GateModule {
 public:
  TwoLayerGateImpl(int64_t in, int64_t experts, int64_t width) : in_(in), k_(experts), h_(width) {
    hidden = register_module("hidden", torch::nn::Linear(in, width));
    out = register_module("out", torch::nn::Linear(width, experts));
  }
  at::Tensor forward(const models::GateFeatures& f) override {
    return out->forward(torch::relu(hidden->forward(f.embedding)));
  }
  int64_t forward_macs() const override { return in_ * h_ + h_ * k_; }
  torch::nn::Linear hidden{nullptr}, out{nullptr};
  int64_t in_, k_, h_;
};

models::Gate make_two_layer_gate(const models::GateSpec& s) {
  return std::make_shared<TwoLayerGateImpl>(s.embedding_dim, s.experts,
                                            options::of<TwoLayerGateOptions>(s.options).hidden);
}

TEST(Registries, AGateKindIsOneClassAndOneRegistration) {
  Registered reg(models::gate_kinds(), "two_layer", models::GateFactory(make_two_layer_gate),
                 options::prototype<TwoLayerGateOptions>());
  TempDir dir;
  const std::string run = dir / "run";
  auto report =
      train_quick(quick_config(quick_dataset(dir.path()), {"gate.kind=two_layer", "gate.two_layer.hidden=24"}), run);
  auto gate = train::load_state(run + "/gate.pt");
  EXPECT_EQ(gate.at("hidden.weight").sizes(), (at::IntArrayRef{24, 32}));  // its option's 24 units; 8w = 32 pre-logits
  EXPECT_EQ(run_json(run)["done"]["gate"]["kind"], "two_layer");
  // The report's costs count this gate: top-1 = base + gate + expert.
  const double base = report["base"]["macs"], top1 = report["moe"]["no_ensembling"]["macs"];
  EXPECT_GT(top1, base + 32 * 24 + 24 * 3);
}

// ---------------------------------------------------------------- expert architecture
// A linear probe on the trunk's pooled features, instead of the base's
// blocks; whether it has a bias is its option.
struct LinearProbeOptions {
  bool bias = true;
  void describe(options::Table& t) { t.key("bias", bias, "the probe has a bias"); }
};

class LinearProbeImpl : public models::ExpertModule {
 public:
  LinearProbeImpl(int64_t channels, int64_t classes, bool bias) : c_(channels), n_(classes) {
    fc = register_module("probe", torch::nn::Linear(torch::nn::LinearOptions(channels, classes).bias(bias)));
  }
  at::Tensor forward(const at::Tensor& trunk) override {
    return fc->forward(torch::adaptive_avg_pool2d(trunk, {1, 1}).flatten(1));
  }
  int64_t forward_macs() const override { return c_ * n_; }
  torch::nn::Linear fc{nullptr};
  int64_t c_, n_;
};

TEST(Registries, AnExpertArchitectureIsOneClassAndOneRegistration) {
  Registered reg(models::expert_architectures(), "linear_probe",
                 models::ExpertFactory([](const models::ExpertSpec& s) -> models::Expert {
                   models::Backbone base(s.base);
                   return std::make_shared<LinearProbeImpl>(base->input_shape_of(s.branch_after)[0], s.base.num_classes,
                                                            options::of<LinearProbeOptions>(s.options).bias);
                 }),
                 options::prototype<LinearProbeOptions>());
  TempDir dir;
  const std::string run = dir / "run";
  auto report = train_quick(
      quick_config(quick_dataset(dir.path()), {"experts.arch=linear_probe", "experts.linear_probe.bias=false"}), run);
  auto expert = train::load_state(run + "/experts/expert-000.pt");
  EXPECT_EQ(expert.size(), 1u);                                           // probe.weight: its option said no bias
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
// The renormalised weighted geometric mean of the two predictions, the
// expert's weight its option; nothing to train.
struct WeightedGeometricOptions {
  double expert_weight = 0.5;
  void describe(options::Table& t) {
    t.key("expert_weight", expert_weight, "the expert's exponent; the base model's is 1 minus it")
        .at_least(0)
        .at_most(1);
  }
};

class WeightedGeometricMean : public models::Ensembler {
 public:
  explicit WeightedGeometricMean(double w) : w_(w) {}
  at::Tensor probs(const at::Tensor& b, const at::Tensor& e, models::EnsemblerModule*) const override {
    at::Tensor p = torch::exp((1 - w_) * torch::log_softmax(b, 1) + w_ * torch::log_softmax(e, 1));
    return p / p.sum(1, true);
  }
  double macs(int64_t classes) const override { return static_cast<double>(classes); }
  double w_;
};

models::EnsemblerFactory weighted_geometric() {
  return models::EnsemblerFactory([](const options::VariantOptions* o) -> std::shared_ptr<const models::Ensembler> {
    return std::make_shared<WeightedGeometricMean>(options::of<WeightedGeometricOptions>(o).expert_weight);
  });
}

TEST(Registries, AnEnsemblerIsOneClassAndOneRegistration) {
  Registered reg(models::ensemblers(), "weighted_geometric", weighted_geometric(),
                 options::prototype<WeightedGeometricOptions>());
  TempDir dir;
  const std::string run = dir / "run";
  auto report = train_quick(
      quick_config(quick_dataset(dir.path()), {"ensembler.kind=weighted_geometric",
                                               "ensembler.weighted_geometric.expert_weight=1", "eval.taus=[0, 1]"}),
      run);
  // Evaluated beside the built-in rules (Table 6), and used by the anytime model.
  for (const char* rule : {"no_ensembling", "bagging", "stacking", "weighted_geometric", "top2"})
    EXPECT_TRUE(report["moe"].contains(rule)) << rule;
  EXPECT_EQ(report["ensembler"], "weighted_geometric");
  // Its option, 1: the expert's prediction alone.
  EXPECT_EQ(report["moe"]["weighted_geometric"]["accuracy"], report["moe"]["no_ensembling"]["accuracy"]);
  EXPECT_DOUBLE_EQ(report["moe"]["weighted_geometric"]["macs"].get<double>(),
                   report["moe"]["no_ensembling"]["macs"].get<double>() + 4);
  // tau = 0 runs every expert, each with one ensembler: its cost has K x 4 ensembler MACs.
  const double base = report["base"]["macs"];
  EXPECT_GT(report["anytime"][0]["macs"].get<double>(), base + 3 * 4);
}

// ---------------------------------------------------------------- training scheme
// A stage that records the initial gate's mass per expert, its option
// scaling it (percent: 100), and a scheme that ends with it (no experts, no
// evaluation).
struct G0MassOptions {
  double scale = 1;
  void describe(options::Table& t) { t.key("scale", scale, "the mass recorded is scaled by this").above(0); }
};

class G0MassStage : public pipeline::Stage {
 public:
  std::string name() const override { return "g0_mass"; }
  std::vector<std::string> keys() const override { return {"g0_mass."}; }
  nlohmann::json run(pipeline::RunState& s) override {
    const train::RowCache& g0 = s.open_g0();
    const double scale = options<G0MassOptions>(s.cfg).scale;
    at::Tensor mass = (g0.sum_rows(100) * scale / static_cast<double>(g0.size())).contiguous();
    return {{"mass", std::vector<double>(mass.data_ptr<double>(), mass.data_ptr<double>() + mass.numel())}};
  }
};

TEST(Registries, ATrainingSchemeIsAListOfStagesAndOneRegistration) {
  Registered stage(pipeline::stages(), "g0_mass",
                   pipeline::StageFactory([] { return std::make_unique<G0MassStage>(); }),
                   options::prototype<G0MassOptions>());
  Registered scheme(pipeline::schemes(), "clusters_only",
                    std::vector<std::string>{"base", "embed", "cluster", "g0_mass"});
  TempDir dir;
  const std::string run = dir / "run";
  Config cfg = quick_config(quick_dataset(dir.path()), {"scheme=clusters_only", "g0_mass.scale=100"});
  EXPECT_TRUE(train_quick(cfg, run).is_null());  // no eval stage, no report
  auto done = run_json(run)["done"];
  for (const char* s : {"base", "embed", "cluster", "g0_mass"}) EXPECT_TRUE(done.contains(s)) << s;
  EXPECT_FALSE(done.contains("experts"));
  double total = 0;
  for (double m : done["g0_mass"]["mass"].get<std::vector<double>>()) total += m;
  EXPECT_NEAR(total, 100.0, 1e-3);  // percent, as its option asked
  EXPECT_EQ(pipeline::scheme_plan(cfg).back().name, "g0_mass");
  // It trains no MoE: nothing to export or predict with.
  EXPECT_ERROR(pipeline::open_finished_run(run, "smoe export", true),
               "holds a run of scheme 'clusters_only', which trains no mixture of experts");
  // The evaluation evaluates the model a training stage handed over: after
  // none, the scheme is refused before anything runs.
  Registered no_model(pipeline::schemes(), "clusters_then_eval",
                      std::vector<std::string>{"base", "embed", "cluster", "eval"});
  EXPECT_ERROR(pipeline::check_config(quick_config(quick_dataset(dir.path()), {"scheme=clusters_then_eval"})),
               "scheme 'clusters_then_eval': stage eval comes after no stage that trains an MoE");
}

// What a variant's options get from being registered: keys under its name
// with their docs and defaults in the configuration reference, their checks
// (a refusal naming the key), --print's resolved config, deep copies (a
// config copied and changed leaves the original as it was), and no other
// file: nothing in the source tree but this file names any of the variants
// above, their options or their keys.
TEST(Registries, AVariantsOptionsAreConfigKeysAndNeedNoOtherFile) {
  Registered initial(cluster::initial_gates(), "id_modulo",
                     std::shared_ptr<const cluster::InitialGate>(std::make_shared<IdModuloGate>()),
                     options::prototype<IdModuloOptions>());
  Registered gate(models::gate_kinds(), "two_layer", models::GateFactory(make_two_layer_gate),
                  options::prototype<TwoLayerGateOptions>());
  Registered expert(models::expert_architectures(), "linear_probe",
                    models::ExpertFactory([](const models::ExpertSpec&) -> models::Expert { return nullptr; }),
                    options::prototype<LinearProbeOptions>());
  Registered stage(pipeline::stages(), "g0_mass",
                   pipeline::StageFactory([] { return std::make_unique<G0MassStage>(); }),
                   options::prototype<G0MassOptions>());
  const std::map<std::string, std::string> defaults = {{"cluster.id_modulo.shift", "0"},
                                                       {"gate.two_layer.hidden", "16"},
                                                       {"experts.linear_probe.bias", "true"},
                                                       {"g0_mass.scale", "1"}};
  std::map<std::string, KeyInfo> reference;
  for (const auto& r : pipeline::config_reference()) reference[r.info.key] = r.info;
  for (const auto& [key, value] : defaults) {
    ASSERT_TRUE(reference.count(key)) << key << ": not in the configuration reference";
    EXPECT_EQ(reference.at(key).default_value, value) << key;
    EXPECT_FALSE(reference.at(key).doc.empty()) << key;
  }
  TempDir dir;
  const std::string data = quick_dataset(dir.path());
  EXPECT_ERROR(quick_config(data, {"gate.two_layer.hidden=0"}), "gate.two_layer.hidden");
  EXPECT_ERROR(quick_config(data, {"g0_mass.scale=0"}), "g0_mass.scale");
  EXPECT_ERROR(quick_config(data, {"gate.two_layer.width=3"}), "gate.two_layer.width");  // not one of its keys
  Config c = quick_config(data, {"gate.two_layer.hidden=7"});
  EXPECT_EQ(flat_yaml(c.to_yaml(false)).at("gate.two_layer.hidden"), "7");  // --print and run.json's config
  Config copy = c;
  copy.set("gate.two_layer.hidden=9");
  EXPECT_EQ(options::of<TwoLayerGateOptions>(c.gate.kinds.get("two_layer")).hidden, 7);
  EXPECT_EQ(options::of<TwoLayerGateOptions>(copy.gate.kinds.get("two_layer")).hidden, 9);

  const std::string self = "tests/pipeline/test_registries.cpp";
  for (const char* word : {"id_modulo", "IdModulo", "two_layer", "TwoLayerGate", "linear_probe", "LinearProbeOptions",
                           "g0_mass", "G0Mass", "weighted_geometric", "WeightedGeometric"})
    EXPECT_EQ(files_naming(word), std::vector<std::string>{self}) << word;
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
  Registered reg(models::gate_kinds(), "two_layer", models::GateFactory(make_two_layer_gate),
                 options::prototype<TwoLayerGateOptions>());
  std::map<std::string, std::vector<std::string>> accepted;
  for (const auto& r : pipeline::config_reference()) {
    EXPECT_FALSE(r.info.doc.empty()) << r.info.key;
    accepted[r.info.key] = r.accepted;
  }
  for (const char* key : {"gate.kind", "distill.gate_kind"}) {
    const auto& names = accepted.at(key);
    EXPECT_NE(std::find(names.begin(), names.end(), "two_layer"), names.end()) << key;
  }
  for (const std::string& key : pipeline::registry_keys())
    EXPECT_TRUE(accepted.count(key)) << key << ": not a config key";
  EXPECT_EQ(accepted.at("scheme"), pipeline::schemes().names());
}

}  // namespace
}  // namespace smoe::testing
