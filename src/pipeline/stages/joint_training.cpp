#include "pipeline/stages/joint_training.h"

#include <torch/torch.h>

#include "core/rng.h"
#include "pipeline/run_state.h"
#include "pipeline/stages/epoch_checkpoints.h"
#include "train/checkpoint.h"

using nlohmann::json;

namespace smoe::pipeline {

train::JointTrainOptions joint_train_options(const RunState& s, const std::string& stage, const OptimConfig& optim,
                                             const RegularizerConfig& reg) {
  train::JointTrainOptions o;
  o.stage = stage;
  o.optim = optim;
  o.reg = reg;
  o.micro_batch = s.cfg.joint.micro_batch;
  o.seed = derive_seed(s.cfg.seed, stage);
  o.log_every = s.cfg.runtime.log_every;
  o.prefetch = s.cfg.data.prefetch;
  o.bn_calibration = s.cfg.base.bn_calibration;
  return o;
}

json run_joint_training(RunState& s, models::JointMoeImpl& moe, const train::JointTrainOptions& o) {
  EpochCheckpoints checkpoints(s, o.stage, o.optim.epochs);
  const int64_t start = checkpoints.resume(moe);

  double seconds = 0;
  int64_t images = 0;
  // Each epoch's per-expert load, kept across a resume (the report plots it).
  json load_history = checkpoints.last().value("load_history", json::array());
  auto on_epoch_end = [&](const train::JointEpochStats& st, torch::optim::Optimizer& opt) {
    seconds += st.seconds;
    images += st.images;
    load_history.push_back(st.load);
    nlohmann::json fields = train::stats_json(st);
    fields.erase("epoch");  // the checkpoint records its epoch itself
    fields["load_history"] = load_history;
    checkpoints.save(moe, opt, st.epoch, fields);
  };
  train::train_joint(moe, s.train, s.comm, o, start, checkpoints.optimizer_bytes(), on_epoch_end);

  const json& last = checkpoints.last();
  const int64_t all_images = s.comm.allreduce_sum(images);
  json record = {{"epochs", o.optim.epochs},
                 {"resumed_after_epoch", start},
                 {"final_loss", last.value("loss", 0.0)},
                 {"train_error", last.value("train_error", 0.0)},
                 {"importance", last.value("importance", 0.0)},
                 {"balance", last.value("balance", 0.0)},
                 {"diversity", last.value("diversity", 0.0)},
                 {"load", last.value("load", json::array())},
                 {"load_history", load_history},
                 {"similarity", last.value("similarity", 0.0)},
                 {"train_seconds", seconds},
                 {"images_per_second", seconds > 0 ? static_cast<double>(all_images) / seconds : 0.0}};
  if (s.comm.is_root()) record["sha256"] = train::save_module(moe, s.store.joint_path(o.stage));
  checkpoints.finish();
  return record;
}

}  // namespace smoe::pipeline
