#include "pipeline/finished_run.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"
#include "models/moe_export.h"
#include "pipeline/model_store.h"
#include "pipeline/stage.h"
#include "train/checkpoint.h"

namespace smoe::pipeline {

FinishedRun open_finished_run(const std::string& run_dir, const std::string& command, bool allow_joint) {
  RunDir run = RunDir::existing(run_dir);
  Config cfg = Config::from_yaml_text(run.saved_config_yaml(), run.file("config.yaml"), {});
  const auto plan = scheme_plan(cfg);
  // The scheme's final model: its last training stage's (algorithm1_finetune
  // trains Algorithm 1's MoE, then fine-tunes it as a jointly trained one).
  const std::optional<TrainedModel> model = scheme_model(cfg);
  SMOE_CHECK(model.has_value(), "{}: {} holds a run of scheme '{}', which trains no mixture of experts", command,
             run_dir, cfg.scheme);
  SMOE_CHECK(!model->joint() || allow_joint,
             "{}: {} holds a run of scheme '{}' (a jointly trained MoE), which {} does not cover yet; the "
             "single-gate schemes (algorithm1, em, dfcp) are covered",
             command, run_dir, cfg.scheme, command);
  for (const auto& st : plan)
    SMOE_CHECK(!st.recorded || run.done(st.name), "{}: {}: stage '{}' has not finished; run smoe train --resume first",
               command, run_dir, st.name);
  SMOE_CHECK(std::filesystem::exists(std::filesystem::path(cfg.data.path) / data::Manifest::kFileName),
             "{}: the run's dataset {} (data.path) is not here: its manifest gives the images' shape, the class names "
             "and the pixels' normalisation",
             command, cfg.data.path);
  data::Manifest manifest = data::Manifest::load(cfg.data.path);
  return FinishedRun{std::move(run), std::move(cfg), std::move(manifest), *model};
}

nlohmann::json finished_report(const FinishedRun& f) {
  const std::string path = f.run.file("report.json");
  return std::filesystem::exists(path) ? nlohmann::json::parse(read_file(path)) : nlohmann::json::object();
}

RuleChoice choose_rule(const FinishedRun& f, const std::string& command, const std::string& rule,
                       std::optional<double> tau, const std::string& ensembler) {
  const bool joint = f.model.joint();
  const auto& rules = joint ? models::joint_export_rules() : models::export_rules();
  RuleChoice c{rule.empty() ? (joint ? "mixture" : "anytime") : rule, 0,
               ensembler.empty() ? f.cfg.ensembler.kind : ensembler};
  SMOE_CHECK(std::find(rules.begin(), rules.end(), c.rule) != rules.end(), "{}: --rule '{}' is not one of {}{}",
             command, c.rule, fmt::join(rules, ", "), joint ? " (a jointly trained MoE's rules)" : "");
  SMOE_CHECK(!tau || (*tau >= 0 && *tau <= 1), "{}: --tau must be in [0, 1], got {}", command, tau.value_or(0));
  SMOE_CHECK(models::ensemblers().has(c.ensembler) || c.ensembler == models::MoeModel::kNoEnsembler,
             "{}: --ensembler '{}' is not one of {}, {} (the expert alone)", command, c.ensembler,
             fmt::join(models::ensemblers().names(), ", "), models::MoeModel::kNoEnsembler);
  if (tau) {
    c.tau = *tau;
  } else {
    // The anytime threshold the report times (stages/eval.cpp): the one that
    // matches the base model's accuracy, else the best.
    const nlohmann::json report = finished_report(f);
    if (report.contains("anytime_summary"))
      for (const char* key : {"tau_at_base_accuracy", "best_tau"})
        if (report["anytime_summary"].contains(key) && report["anytime_summary"][key].is_number()) {
          c.tau = report["anytime_summary"][key].get<double>();
          break;
        }
  }
  return c;
}

models::MoeModel load_finished_moe(const FinishedRun& f, c10::Device device) {
  ModelStore store(f.run, f.cfg, network_spec(f.cfg, f.manifest), device);
  models::Backbone base = store.build_base();
  train::load_module(*base, store.base_path());
  base->eval();
  return store.load_moe(base, f.cfg.em.steps);
}

std::shared_ptr<models::JointMoeImpl> load_finished_joint_moe(const FinishedRun& f, c10::Device device) {
  SMOE_ASSERT(f.model.joint(), "{} holds no jointly trained MoE", f.run.root());
  ModelStore store(f.run, f.cfg, network_spec(f.cfg, f.manifest), device);
  if (!f.model.around_base) return store.load_joint_model(f.model, nullptr);
  models::Backbone base = store.build_base();
  train::load_module(*base, store.base_path());
  return store.load_joint_model(f.model, base.get());
}

}  // namespace smoe::pipeline
