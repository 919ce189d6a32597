// The optimisers (SGD with momentum / Nesterov and weight decay, or Adam as
// Krishnamurthy et al. train their MoEs) and the learning-rate schedules
// (linear warm-up, then cosine, step or constant), per step.
#pragma once

#include <torch/optim/optimizer.h>

#include <memory>

#include "train/optim_options.h"

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

// o.optimizer: sgd, adam (betas 0.9 and 0.999, L2 weight decay) or
// "adamw" (decoupled weight decay). With `groups`, one parameter group each
// whose learning rate is lr x its scale (set_lr keeps the ratios).
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params, const OptimConfig& o);
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<std::vector<at::Tensor>>& groups,
                                                        const OptimConfig& o);
// Sets every group's learning rate to lr x (scales[g], 1 when absent).
void set_lr(torch::optim::Optimizer& opt, double lr, const std::vector<double>& scales = {});
// Scales the gradients of `params` so that their global L2 norm is at most
// o.grad_clip (no-op when 0); returns the norm before clipping.
double clip_gradients(const std::vector<at::Tensor>& params, const OptimConfig& o);

}  // namespace smoe::train
