// The SGD loop shared by experts, ensemblers and the gate: epochs of
// mini-batches over samples [0, n), either a fresh permutation per epoch or
// (sampling mode, Royer et al. option ii) ids drawn with probability
// proportional to given weights, round(sum of weights) per epoch. Every draw
// is seeded from (seed, epoch) only.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "train/optim_options.h"

namespace torch::optim {
class Optimizer;
}

namespace smoe::train {

// Called after each epoch (1-based) with the optimiser and the stats so
// far (where a long task saves a checkpoint).
struct LoopStats;
using LoopEpochHook = std::function<void(int64_t epoch, torch::optim::Optimizer&, const LoopStats&)>;

struct LoopSpec {
  std::string stage;  // for progress lines, e.g. "expert 3"
  int64_t n = 0;
  OptimConfig optim;
  uint64_t seed = 0;
  int64_t log_every = 50;
  const std::vector<double>* sample_weights = nullptr;  // sampling mode when set
  // Resuming: epochs [start_epoch, epochs) run, after the optimiser state
  // saved after epoch start_epoch (the parameters already hold its weights).
  int64_t start_epoch = 0;
  std::string optimizer_state;
  // and the loss scaler's state then (float16; 0: a fresh scaler).
  double loss_scale = 0;
  int64_t loss_scale_good_steps = 0;
  LoopEpochHook on_epoch_end;
  // Called at the start of each epoch with its batches in the order
  // batch_loss will be asked for them: an input source that builds batches
  // on the host (augmentation) starts preparing them on a loader thread.
  std::function<void(const std::vector<std::vector<int64_t>>& batches, int64_t epoch)> on_epoch_batches;
  // Throw Stopped (core/stop.h) at the next batch after SIGTERM or SIGUSR1
  // reached this process (inside a StopScope; this rank alone, no collective).
  bool stop_on_signal = false;
};

struct LoopStats {
  double seconds = 0;
  double final_loss = 0;  // mean batch loss of the last epoch
  int64_t steps = 0;
  int64_t samples = 0;
  std::string precision = "float32";  // what the forward passes ran in (train/precision.h)
  // Dynamic loss scaling (float16, train/loss_scaler.h): the scale after the
  // last step, the good steps since it last changed, the steps skipped.
  double loss_scale = 1;
  int64_t loss_scale_good_steps = 0;
  int64_t skipped_steps = 0;
};

// batch_loss(ids, epoch) returns the scalar loss of a batch.
LoopStats sgd_loop(const std::vector<at::Tensor>& params, const LoopSpec& spec,
                   const std::function<at::Tensor(const std::vector<int64_t>&, int64_t)>& batch_loss);

}  // namespace smoe::train
