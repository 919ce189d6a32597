// What the joint and distill stages share: training a jointly trained MoE
// (train/joint_trainer.h) with a checkpoint after every epoch
// (epoch_checkpoints.h), so that a killed or preempted job resumes from its
// last finished epoch, exactly.
#pragma once

#include <nlohmann/json.hpp>

#include "models/joint_moe.h"
#include "train/joint_trainer.h"

namespace smoe::pipeline {

struct RunState;

// Collective: trains `moe` (options.stage names the stage), saves the final
// model to store.joint_path(stage); returns the stage's record (rank 0).
nlohmann::json run_joint_training(RunState& state, models::JointMoeImpl& moe, const train::JointTrainOptions& options);

}  // namespace smoe::pipeline
