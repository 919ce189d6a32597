// The optimisers (SGD with momentum / Nesterov and weight decay, or Adam as
// Krishnamurthy et al. train their MoEs) and the learning-rate schedules
// (linear warm-up, then cosine, step or constant), per step.
#pragma once

#include <torch/optim/optimizer.h>

#include <memory>

#include "core/config.h"

namespace smoe::train {

class Schedule {
 public:
  Schedule(const OptimConfig& o, int64_t steps_per_epoch);
  // Learning rate of step `step` (0-based, counted over the whole run).
  double lr(int64_t step) const;
  int64_t total_steps() const { return total_; }

 private:
  OptimConfig o_;
  int64_t per_epoch_, total_, warmup_;
};

// o.optimizer: "sgd" or "adam" (betas 0.9 and 0.999, L2 weight decay).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params, const OptimConfig& o);
void set_lr(torch::optim::Optimizer& opt, double lr);

}  // namespace smoe::train
