#include "pipeline/export.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/build_info.h"
#include "core/error.h"
#include "core/hash.h"
#include "data/batch.h"
#include "models/moe_export.h"
#include "pipeline/model_store.h"
#include "pipeline/run_dir.h"
#include "pipeline/stage.h"
#include "train/checkpoint.h"

namespace smoe::pipeline {
namespace {

// The anytime threshold the report times (stages/eval.cpp): the one that
// matches the base model's accuracy, else the best; 0 without a report.
double report_tau(const nlohmann::json& report) {
  if (!report.contains("anytime_summary")) return 0;
  const auto& s = report["anytime_summary"];
  for (const char* key : {"tau_at_base_accuracy", "best_tau"})
    if (s.contains(key) && s[key].is_number()) return s[key].get<double>();
  return 0;
}

}  // namespace

std::string export_run(const ExportRequest& r) {
  SMOE_CHECK(!r.out.empty(), "smoe export: give --out FILE");
  const auto& rules = models::export_rules();
  SMOE_CHECK(std::find(rules.begin(), rules.end(), r.rule) != rules.end(),
             "smoe export: --rule '{}' is not one of {}", r.rule, fmt::join(rules, ", "));
  SMOE_CHECK(!r.tau || (*r.tau >= 0 && *r.tau <= 1), "smoe export: --tau must be in [0, 1], got {}", r.tau.value_or(0));
  SMOE_CHECK(r.force || !std::filesystem::exists(r.out), "smoe export: {} exists (--force replaces it)", r.out);
  const RunDir run = RunDir::existing(r.run_dir);
  const Config cfg = Config::from_yaml_text(run.saved_config_yaml(), run.file("config.yaml"), {});
  const auto plan = scheme_plan(cfg);
  const bool single_gate = std::any_of(plan.begin(), plan.end(), [](const StagePlan& s) { return s.name == "eval"; });
  SMOE_CHECK(single_gate,
             "smoe export: {} holds a run of scheme '{}' (a jointly trained MoE), which export does not cover yet; "
             "the single-gate schemes (algorithm1, em, dfcp) export",
             r.run_dir, cfg.scheme);
  for (const auto& st : plan)
    SMOE_CHECK(!st.recorded || run.done(st.name), "smoe export: {}: stage '{}' has not finished; run smoe train --resume first",
               r.run_dir, st.name);
  const std::string ensembler = r.ensembler.empty() ? cfg.ensembler.kind : r.ensembler;
  SMOE_CHECK(models::ensemblers().has(ensembler) || ensembler == models::MoeModel::kNoEnsembler,
             "smoe export: --ensembler '{}' is not one of {}, {} (the expert alone)", ensembler,
             fmt::join(models::ensemblers().names(), ", "), models::MoeModel::kNoEnsembler);
  SMOE_CHECK(std::filesystem::exists(std::filesystem::path(cfg.data.path) / data::Manifest::kFileName),
             "smoe export: the run's dataset {} (data.path) is not here: its manifest gives the images' shape, the "
             "class names and the pixels' normalisation",
             cfg.data.path);
  const data::Manifest manifest = data::Manifest::load(cfg.data.path);

  const nlohmann::json report = std::filesystem::exists(run.file("report.json"))
                                    ? nlohmann::json::parse(read_file(run.file("report.json")))
                                    : nlohmann::json::object();
  models::ExportOptions o;
  o.rule = r.rule;
  o.tau = r.tau ? *r.tau : report_tau(report);
  o.ensembler = ensembler;
  o.input_shape = manifest.shape;
  const data::PixelNormalization n = data::pixel_normalization(manifest);
  o.pixel_scale = n.scale;
  o.pixel_shift = n.shift;
  o.classes = manifest.class_names;
  o.provenance = {{"run", std::filesystem::absolute(r.run_dir).lexically_normal().string()},
                  {"scheme", cfg.scheme},
                  {"dataset", manifest.name},
                  {"config_sha256", sha256_hex(run.saved_config_yaml())},
                  {"trained_commit", report.contains("provenance") ? report["provenance"].value("git_commit", "unknown")
                                                                   : std::string("unknown")},
                  {"exported_by", fmt::format("smoe {} (commit {})", build::version(), build::commit())},
                  {"libtorch", TORCH_VERSION}};

  const c10::Device cpu(c10::kCPU);
  ModelStore store(run, cfg, network_spec(cfg, manifest), cpu);
  models::Backbone base = store.build_base();
  train::load_module(*base, store.base_path());
  models::MoeModel moe = store.load_moe(base, cfg.em.steps);
  models::export_moe(moe, o, r.out);
  return fmt::format("smoe export: {} -> {} ({} experts, rule {}, tau {}, ensembler {}; {} classes, input {}x{}x{})",
                     r.run_dir, r.out, moe.num_experts(), o.rule, o.tau, o.ensembler, o.classes.size(),
                     o.input_shape[0], o.input_shape[1], o.input_shape[2]);
}

}  // namespace smoe::pipeline
