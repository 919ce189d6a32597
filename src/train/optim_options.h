// The optimiser section every training loop has (base.*, gate.*, experts.*,
// ensembler.*, joint.*, distill.*, finetune.*: the same keys under each
// trainer's prefix, each trainer with its own defaults). Each key beside its
// field (core/options.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/options.h"

namespace smoe {

enum class OptimizerKind { sgd, adam, adamw };
inline const options::Names<OptimizerKind>& option_names(OptimizerKind) {
  static const options::Names<OptimizerKind> n{
      {OptimizerKind::sgd, "sgd"}, {OptimizerKind::adam, "adam"}, {OptimizerKind::adamw, "adamw"}};
  return n;
}

enum class LrSchedule { cosine, step, constant };
inline const options::Names<LrSchedule>& option_names(LrSchedule) {
  static const options::Names<LrSchedule> n{
      {LrSchedule::cosine, "cosine"}, {LrSchedule::step, "step"}, {LrSchedule::constant, "constant"}};
  return n;
}

// What a training loop's forward passes run in (train/precision.h).
enum class Precision { float32, bfloat16, float16, automatic };
inline const options::Names<Precision>& option_names(Precision) {
  static const options::Names<Precision> n{{Precision::float32, "float32"},
                                           {Precision::bfloat16, "bfloat16"},
                                           {Precision::float16, "float16"},
                                           {Precision::automatic, "auto"}};
  return n;
}

struct OptimConfig {
  OptimizerKind optimizer = OptimizerKind::sgd;
  int64_t epochs = 1;
  int64_t batch_size = 128;
  double lr = 0.1;
  double momentum = 0.9;  // SGD momentum (adam: beta1 stays 0.9)
  double weight_decay = 0;
  bool nesterov = true;
  LrSchedule schedule = LrSchedule::cosine;
  std::vector<int64_t> step_epochs;  // epochs at which 'step' multiplies lr by step_gamma
  double step_gamma = 0.1;
  int64_t warmup_epochs = 0;
  double label_smoothing = 0;
  double grad_clip = 0;                      // largest global L2 norm of the gradient (0 = no clipping)
  Precision precision = Precision::float32;  // autocast of the forward pass (train/precision.h)
  bool channels_last = false;                // convolution weights in channels-last memory format while training

  // A trainer's defaults.
  static OptimConfig with(int64_t epochs, int64_t batch_size, double lr, double weight_decay, LrSchedule schedule,
                          OptimizerKind optimizer = OptimizerKind::sgd) {
    OptimConfig o;
    o.epochs = epochs;
    o.batch_size = batch_size;
    o.lr = lr;
    o.weight_decay = weight_decay;
    o.schedule = schedule;
    o.optimizer = optimizer;
    return o;
  }

  void describe(options::Table& t) {
    t.key("optimizer", optimizer,
          "sgd (momentum, Nesterov), adam (betas 0.9, 0.999; weight decay as L2) or adamw (decoupled weight decay)");
    t.key("epochs", epochs, "training epochs").at_least(0);
    t.key("batch_size", batch_size, "mini-batch size (samples per step)").at_least(1);
    t.key("lr", lr, "peak learning rate").above(0);
    t.key("momentum", momentum, "SGD momentum").at_least(0).at_most(1);
    t.key("weight_decay", weight_decay, "L2 weight decay").at_least(0);
    t.key("nesterov", nesterov, "Nesterov momentum");
    t.key("schedule", schedule, "learning-rate schedule");
    t.key("step_epochs", step_epochs, "epochs where 'step' multiplies lr by step_gamma").at_least(1);
    t.key("step_gamma", step_gamma, "lr factor at each step epoch").above(0);
    t.key("warmup_epochs", warmup_epochs, "linear warm-up epochs").at_least(0);
    t.rule([this](const std::string& at) {
      SMOE_CHECK(warmup_epochs <= std::max<int64_t>(epochs, 0) || epochs == 0,
                 "config key '{}warmup_epochs' is {}: more than {}epochs ({})", at, warmup_epochs, at, epochs);
    });
    t.key("label_smoothing", label_smoothing, "label smoothing of the cross-entropy").at_least(0).at_most(0.99);
    t.key("grad_clip", grad_clip, "clip the gradient's global L2 norm to this (0 = no clipping)").at_least(0);
    t.key("precision", precision,
          "bfloat16: the forward passes autocast to bfloat16 (weights, gradients and optimiser state stay float32) "
          "where the hardware computes it natively (AVX-512 BF16 or AMX CPUs, GPUs of compute capability 8.0+); "
          "float16: autocast to float16 on GPUs, with dynamic loss scaling (on a CPU the passes run in float32, the "
          "scaler still on); auto: the fastest the device computes natively (bfloat16, else float16 on a GPU, else "
          "float32); where a request cannot run, float32 runs and the report says why");
    t.key("channels_last", channels_last,
          "convolution weights in channels-last memory format while training (oneDNN's and cuDNN's preferred "
          "layout: the same arithmetic in another summation order; checkpoints are saved in the usual layout)");
  }
  // The keys a per-expert entry (experts.optims) may override: the
  // optimiser's own, not the precision or the memory format.
  static std::vector<std::string> per_expert_keys() {
    return {"optimizer",     "epochs",          "batch_size", "lr",          "momentum",
            "weight_decay",  "nesterov",        "schedule",   "step_epochs", "step_gamma",
            "warmup_epochs", "label_smoothing", "grad_clip"};
  }
};

}  // namespace smoe
