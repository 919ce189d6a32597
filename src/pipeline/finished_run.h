// A finished run's trained MoE, for the commands that use it after training
// (smoe export, smoe predict): the run folder, its config and its dataset's
// manifest, checked in one line each (no run there, a stage not finished, a
// scheme whose model these commands do not cover, the dataset gone), and the
// MoE loaded from it.
#pragma once

#include <c10/core/Device.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "data/manifest.h"
#include "models/joint_moe.h"
#include "models/moe.h"
#include "pipeline/config.h"
#include "pipeline/run_dir.h"
#include "pipeline/trained_model.h"

namespace smoe::pipeline {

struct FinishedRun {
  RunDir run;
  Config cfg;
  data::Manifest manifest;  // the training dataset's: image shape, classes, pixel statistics
  // The model it holds (the scheme's last training stage's): Algorithm 1's
  // MoE, or a jointly trained one (schemes joint, joint_distill,
  // algorithm1_finetune) with its checkpoint's stage and gate kind.
  TrainedModel model;
};

// `command` names the caller in the messages ("smoe export"); with
// `allow_joint` false a jointly trained MoE is refused.
FinishedRun open_finished_run(const std::string& run_dir, const std::string& command, bool allow_joint = false);

// The run's report.json (an empty object if it has none).
nlohmann::json finished_report(const FinishedRun& finished);

// Which rule of the MoE (MoeModel::predict_routed) to apply, checked:
// `rule` one of base, top1, top2, anytime (default anytime), or for a
// jointly trained MoE one of mixture, top1, top2 (default mixture); `tau` in [0, 1], by default the
// report's tau at the base model's accuracy (else its best tau, else 0);
// `ensembler` a registered one or none (the expert alone), by default the
// run's ensembler.kind.
struct RuleChoice {
  std::string rule;
  double tau = 0;
  std::string ensembler;
};
RuleChoice choose_rule(const FinishedRun& finished, const std::string& command, const std::string& rule,
                       std::optional<double> tau, const std::string& ensembler);

// The final round's MoE (every expert), on `device`, in eval mode.
models::MoeModel load_finished_moe(const FinishedRun& finished, c10::Device device);
// A jointly trained run's MoE, on `device`, in eval mode.
std::shared_ptr<models::JointMoeImpl> load_finished_joint_moe(const FinishedRun& finished, c10::Device device);

}  // namespace smoe::pipeline
