// Stage "base" (Algorithm 1 step 1): the base model phi, trained
// data-parallel on every rank (exact fixed-point gradient sums over
// micro-batches, so the result does not depend on the rank count), or loaded
// from base.checkpoint; the run keeps its own copy, base.pt.
#include <torch/torch.h>

#include "comm/tensor_collectives.h"
#include "core/log.h"
#include "core/rng.h"
#include "models/init_lock.h"
#include "pipeline/rank_use.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "pipeline/stages/epoch_checkpoints.h"
#include "train/base_trainer.h"
#include "train/checkpoint.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class BaseStage : public Stage {
 public:
  std::string name() const override { return "base"; }
  std::vector<std::string> keys() const override {
    std::vector<std::string> keys = first_stage_keys();
    keys.insert(keys.end(), {"data.crop_padding", "data.hflip", "base."});
    return keys;
  }
  void check_inputs(const Config& c, const data::Manifest& m) const override {
    if (c.base.checkpoint.empty()) {
      check_batch_fits(c, m, "base", c.base.optim.batch_size);
      return;
    }
    // The given base model must load into the configured architecture (the
    // errors name the file and the mismatched tensors).
    const models::ProbeScope probe;  // built to be loaded: no draw from the ranks' generator
    models::Backbone base(network_spec(c, m));
    train::load_module(*base, c.base.checkpoint);
  }
  void restore(RunState& s) override {
    s.load_base(s.store.base_path());
    log::info("base      already done (run.json): loaded {}", s.store.base_path());
  }
  json run(RunState& s) override {
    if (!s.cfg.base.checkpoint.empty()) {
      // A given base model: the run keeps its own copy (what resume and eval load).
      s.load_base(s.cfg.base.checkpoint);
      json record = {{"source", s.cfg.base.checkpoint}};
      if (s.comm.is_root()) record["sha256"] = train::save_module(*s.base, s.store.base_path());
      return record;
    }
    train::BaseTrainOptions o;
    o.optim = s.cfg.base.optim;
    o.micro_batch = s.cfg.base.micro_batch;
    o.bn_calibration = s.cfg.base.bn_calibration;
    o.augment = s.cfg.base.augment;
    o.crop_padding = s.cfg.data.crop_padding;
    o.hflip = s.cfg.data.hflip;
    o.seed = derive_seed(s.cfg.seed, "base");
    o.log_every = s.cfg.runtime.log_every;
    o.prefetch = s.cfg.data.prefetch;
    // A checkpoint after every epoch: a stopped or killed job resumes after
    // its last finished epoch, with the uninterrupted run's weights.
    EpochCheckpoints checkpoints(s, "base", o.optim.epochs);
    const int64_t start = checkpoints.resume(*s.base);
    if (checkpoints.last().is_object()) {  // float16's loss scaler resumes where it was
      o.loss_scale = checkpoints.last().value("loss_scale", 0.0);
      o.loss_scale_good_steps = checkpoints.last().value("loss_scale_good_steps", int64_t{0});
    }
    auto on_epoch_end = [&](int64_t epoch, const train::BaseTrainStats& st, torch::optim::Optimizer& opt) {
      checkpoints.save(*s.base, opt, epoch,
                       {{"loss", st.final_loss},
                        {"train_accuracy", st.final_train_accuracy},
                        {"loss_scale", st.loss_scale},
                        {"loss_scale_good_steps", st.loss_scale_good_steps}});
    };
    // More ranks than micro-batches per step leave ranks idle (pipeline/rank_use.h).
    const RankUse use = base_rank_use(o.optim.batch_size, o.micro_batch, s.comm.size());
    const std::string idle = base_idle_warning(o.optim.batch_size, o.micro_batch, s.comm.size());
    if (!idle.empty() && s.comm.is_root()) log::warn("{}", idle);
    const auto stats =
        train::train_base(s.base, s.train, s.comm, o, start, checkpoints.optimizer_bytes(), on_epoch_end);
    // Identical on every rank by construction; rank 0's copy is made authoritative anyway.
    broadcast_module(s.comm, *s.base, 0);
    json record = {{"final_loss", checkpoints.last().value("loss", 0.0)},
                   {"train_accuracy", checkpoints.last().value("train_accuracy", 0.0)},
                   {"resumed_after_epoch", start},
                   {"precision", stats.precision},
                   {"skipped_steps", stats.skipped_steps},
                   {"micro_batches_per_step", use.work},
                   {"idle_rank_share", use.idle}};
    if (s.comm.is_root()) record["sha256"] = train::save_module(*s.base, s.store.base_path());
    checkpoints.finish();
    return record;
  }
};

}  // namespace

std::unique_ptr<Stage> make_base_stage() { return std::make_unique<BaseStage>(); }

std::vector<std::string> first_stage_keys() {
  return {"seed",
          "data.path",
          "data.train_split",
          "data.test_split",
          "data.limit_train",
          "data.limit_test",
          "data.label_noise",
          "data.trusted_fraction",
          "model."};
}

void broadcast_module(comm::Communicator& comm, torch::nn::Module& m, int root) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters(true)) comm::broadcast(comm, p.data(), root);
  for (auto& b : m.buffers(true)) comm::broadcast(comm, b, root);
}

}  // namespace smoe::pipeline
