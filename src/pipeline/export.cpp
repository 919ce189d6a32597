#include "pipeline/export.h"

#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/build_info.h"
#include "core/error.h"
#include "core/hash.h"
#include "data/batch.h"
#include "models/moe_export.h"
#include "pipeline/finished_run.h"

namespace smoe::pipeline {

std::string export_run(const ExportRequest& r) {
  SMOE_CHECK(!r.out.empty(), "smoe export: give --out FILE");
  SMOE_CHECK(r.force || !std::filesystem::exists(r.out), "smoe export: {} exists (--force replaces it)", r.out);
  const FinishedRun finished = open_finished_run(r.run_dir, "smoe export", /*allow_joint=*/true);
  const RunDir& run = finished.run;
  const Config& cfg = finished.cfg;
  const data::Manifest& manifest = finished.manifest;
  const RuleChoice choice = choose_rule(finished, "smoe export", r.rule, r.tau, r.ensembler);

  const nlohmann::json report = finished_report(finished);
  models::ExportOptions o;
  o.rule = choice.rule;
  o.tau = choice.tau;
  o.ensembler = choice.ensembler;
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
  int64_t experts = 0;
  if (finished.model.joint()) {
    o.provenance["model"] = finished.model.checkpoint;
    o.provenance["gate_kind"] = finished.model.gate_kind;
    auto moe = load_finished_joint_moe(finished, cpu);
    models::export_joint_moe(*moe, o, r.out);
    experts = moe->num_experts();
  } else {
    models::MoeModel moe = load_finished_moe(finished, cpu);
    models::export_moe(moe, o, r.out);
    experts = moe.num_experts();
  }
  return fmt::format("smoe export: {} -> {} ({} experts, rule {}{}; {} classes, input {}x{}x{})", r.run_dir, r.out,
                     experts, o.rule,
                     finished.model.joint() ? fmt::format(", {} gate", finished.model.gate_kind)
                                            : fmt::format(", tau {}, ensembler {}", o.tau, o.ensembler),
                     o.classes.size(), o.input_shape[0], o.input_shape[1], o.input_shape[2]);
}

}  // namespace smoe::pipeline
