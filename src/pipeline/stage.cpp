#include "pipeline/stage.h"

#include "cluster/initial_gate.h"
#include "core/error.h"
#include "models/ensembler.h"
#include "models/expert.h"
#include "models/gate.h"
#include "models/network.h"
#include "pipeline/memory_plan.h"
#include "pipeline/model_store.h"

namespace smoe::pipeline {

// The built-in stages, one file each under stages/.
std::unique_ptr<Stage> make_base_stage();
std::unique_ptr<Stage> make_embed_stage();
std::unique_ptr<Stage> make_cluster_stage();
std::unique_ptr<Stage> make_gate_stage();
std::unique_ptr<Stage> make_experts_stage();
std::unique_ptr<Stage> make_em_stage();
std::unique_ptr<Stage> make_eval_stage();
std::unique_ptr<Stage> make_joint_stage();
std::unique_ptr<Stage> make_distill_stage();
std::unique_ptr<Stage> make_finetune_stage();
std::unique_ptr<Stage> make_pseudo_label_stage();

Registry<StageFactory>& stages() {
  static Registry<StageFactory> registry("stage", "scheme",
                                         {{"base", make_base_stage},
                                          {"embed", make_embed_stage},
                                          {"pseudo_label", make_pseudo_label_stage},
                                          {"cluster", make_cluster_stage},
                                          {"gate", make_gate_stage},
                                          {"experts", make_experts_stage},
                                          {"em", make_em_stage},
                                          {"eval", make_eval_stage},
                                          {"joint", make_joint_stage},
                                          {"distill", make_distill_stage},
                                          {"finetune", make_finetune_stage}});
  return registry;
}

Registry<std::vector<std::string>>& schemes() {
  static Registry<std::vector<std::string>> registry(
      "training scheme", "scheme",
      {{"algorithm1", {"base", "embed", "cluster", "gate", "experts", "eval"}},
       {"em", {"base", "embed", "cluster", "gate", "experts", "em", "eval"}},
       // DFCP-MoE: the samples relabelled from a trusted subset before clustering.
       {"dfcp", {"base", "embed", "pseudo_label", "cluster", "gate", "experts", "eval"}},
       // Krishnamurthy et al.: gate and experts trained together; then optionally the gate distilled.
       {"joint", {"joint", "eval"}},
       {"joint_distill", {"joint", "distill", "eval"}},
       // Algorithm 1, its report, then its MoE trained further as a jointly trained one (report.json's "finetuned").
       {"algorithm1_finetune", {"base", "embed", "cluster", "gate", "experts", "eval", "finetune", "eval"}}});
  return registry;
}

namespace {
[[maybe_unused]] const bool loads = options::add_variant_loader([] { stages(); });
}  // namespace

std::vector<std::unique_ptr<Stage>> scheme_stages(const Config& config) {
  std::vector<std::unique_ptr<Stage>> out;
  for (const auto& name : schemes().get(config.scheme)) out.push_back(stages().get(name)());
  return out;
}

std::optional<TrainedModel> scheme_model(const Config& config) {
  std::optional<TrainedModel> model;
  for (const auto& stage : scheme_stages(config))
    if (auto m = stage->trained_model(config)) model = m;
  return model;
}

std::vector<StagePlan> scheme_plan(const Config& config) {
  std::vector<StagePlan> plan;
  for (const auto& st : scheme_stages(config))
    plan.push_back({st->name(), st->keys(), st->record_prefixes(), st->recorded()});
  return plan;
}

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool declares(const std::vector<std::string>& keys, const std::string& key) {
  for (const auto& k : keys)
    if (k == key || (!k.empty() && k.back() == '.' && starts_with(key, k))) return true;
  return false;
}

}  // namespace

bool key_never_changes_results(const std::string& key) {
  return starts_with(key, "runtime.") || key == "data.prefetch" || key == "data.storage" || key == "data.cache_mb" ||
         key == "data.verify";
}

size_t first_stage_using(const std::vector<StagePlan>& plan, const std::string& key) {
  if (key_never_changes_results(key)) return plan.size();
  for (size_t i = 0; i < plan.size(); ++i)
    if (plan[i].recorded && declares(plan[i].keys, key)) return i;
  // Declared only by the evaluation or by stages outside this scheme: no
  // recorded result depends on it.
  for (const auto& name : stages().names())
    if (declares(stages().get(name)()->keys(), key)) return plan.size();
  return 0;  // declared by no stage: assume everything depends on it
}

size_t stage_owning(const std::vector<StagePlan>& plan, const std::string& record) {
  for (size_t i = 0; i < plan.size(); ++i) {
    if (record == plan[i].name) return i;
    for (const auto& p : plan[i].record_prefixes)
      if (starts_with(record, p)) return i;
  }
  return plan.size();
}

void check_config(const Config& c) {
  cluster::initial_gates().get(c.cluster.method);
  models::gate_kinds().get(c.gate.kind);
  models::expert_architectures().get(c.experts.arch);
  for (const auto& arch : c.experts.archs) models::expert_architectures().get(arch, "experts.archs");
  models::ensemblers().get(c.ensembler.kind);
  // An expert reads what the base model's first branch_after blocks output:
  // there is nothing after the last block (a larger value used to reach the
  // experts stage and fail there with an allocation of exabytes).
  SMOE_CHECK(c.experts.branch_after <= models::NetworkSpec::kBlocks,
             "config key 'experts.branch_after' is {}: model.arch {} has {} blocks (0 to {}: the experts read the "
             "output of that many blocks)",
             c.experts.branch_after, options::name(c.model.arch), models::NetworkSpec::kBlocks,
             models::NetworkSpec::kBlocks);
  const bool branch_experts =
      models::expert_architectures().get(c.experts.arch).copies_base_blocks() && c.experts.archs.empty();
  SMOE_CHECK(c.experts.depth == 0 || (branch_experts && c.model.arch == models::NetworkArch::tiny_resnet),
             "config key 'experts.depth' is {}: it sets the depth of branch experts of a tiny_resnet base "
             "(experts.arch: branch, model.arch: tiny_resnet, no experts.archs)",
             c.experts.depth);
  SMOE_CHECK(c.experts.depth == 0 || c.experts.depth == 10 || c.experts.depth == 18 || c.experts.depth == 34,
             "config key 'experts.depth': expected 0, 10, 18 or 34, got {}", c.experts.depth);
  auto stages = scheme_stages(c);
  bool em = false;  // a stage of the scheme reads em.steps
  for (const auto& st : stages) {
    st->check(c);
    em = em || declares(st->keys(), "em.steps");
  }
  SMOE_CHECK(em || c.em.steps == 0,
             "config key 'em.steps' is {} but scheme '{}' has no em stage (set scheme: em to run EM rounds)",
             c.em.steps, c.scheme);
}

void check_shards(const Config& c, const data::Manifest& m, data::VerifyCache& shards) {
  const auto mode = c.data.verify;
  data::verify_split(c.data.path, m, c.data.train_split, c.data.limit_train, mode, shards);
  data::verify_split(c.data.path, m, c.data.test_split, c.data.limit_test, mode, shards);
}

void check_inputs(const Config& c, data::VerifyCache& shards) {
  check_config(c);
  SMOE_CHECK(!c.data.path.empty(), "config key 'data.path' is empty: name the dataset folder (smoe-data convert ...)");
  const data::Manifest m = data::Manifest::load(c.data.path);
  m.split(c.data.train_split);
  m.split(c.data.test_split);
  // The model the config names, on the dataset's images and classes (checked
  // here, not when the base stage builds it after the run folder exists).
  try {
    network_spec(c, m).validate();
  } catch (const Error& e) {
    fail("dataset {} and config key 'model.*': {}", c.data.path, e.what());
  }
  check_split_storage(c, m);
  check_shards(c, m, shards);
  for (const auto& st : scheme_stages(c)) st->check_inputs(c, m);
}

}  // namespace smoe::pipeline
