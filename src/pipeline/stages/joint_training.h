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

// The options every stage that trains a jointly trained MoE shares: the
// stage's name, optimiser and regularisers, joint.micro_batch, a seed
// derived from the stage's name, the log, prefetch and BatchNorm settings.
train::JointTrainOptions joint_train_options(const RunState& state, const std::string& stage, const OptimConfig& optim,
                                             const RegularizerConfig& reg);

// Collective: trains `moe` (options.stage names the stage), saves the final
// model to store.joint_path(stage); returns the stage's record (rank 0).
nlohmann::json run_joint_training(RunState& state, models::JointMoeImpl& moe, const train::JointTrainOptions& options);

}  // namespace smoe::pipeline
