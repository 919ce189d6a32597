#include "train/optim.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace smoe::train {

Schedule::Schedule(const OptimConfig& o, int64_t steps_per_epoch)
    : o_(o),
      per_epoch_(std::max<int64_t>(steps_per_epoch, 1)),
      total_(o.epochs * per_epoch_),
      warmup_(o.warmup_epochs * per_epoch_) {}

double Schedule::lr(int64_t step) const {
  if (step < warmup_) return o_.lr * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (o_.schedule == LrSchedule::constant) return o_.lr;
  if (o_.schedule == LrSchedule::step) {
    const int64_t epoch = step / per_epoch_;
    double lr = o_.lr;
    for (int64_t e : o_.step_epochs)
      if (epoch >= e) lr *= o_.step_gamma;
    return lr;
  }
  // cosine from the end of warm-up to zero at the last step
  const double t = static_cast<double>(step - warmup_) / static_cast<double>(std::max<int64_t>(total_ - warmup_, 1));
  return 0.5 * o_.lr * (1.0 + std::cos(M_PI * std::min(t, 1.0)));
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<std::vector<at::Tensor>>& groups,
                                                        const OptimConfig& o) {
  std::vector<torch::optim::OptimizerParamGroup> g;
  for (const auto& params : groups) g.emplace_back(params);
  switch (o.optimizer) {
    case OptimizerKind::adamw: {
      torch::optim::AdamWOptions opts(o.lr);
      opts.weight_decay(o.weight_decay);
      return std::make_unique<torch::optim::AdamW>(g, opts);
    }
    case OptimizerKind::adam: {
      torch::optim::AdamOptions opts(o.lr);
      opts.weight_decay(o.weight_decay);
      return std::make_unique<torch::optim::Adam>(g, opts);
    }
    case OptimizerKind::sgd:
      break;
  }
  torch::optim::SGDOptions opts(o.lr);
  opts.momentum(o.momentum).weight_decay(o.weight_decay).nesterov(o.nesterov && o.momentum > 0);
  return std::make_unique<torch::optim::SGD>(g, opts);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<at::Tensor>& params, const OptimConfig& o) {
  return make_optimizer(std::vector<std::vector<at::Tensor>>{params}, o);
}

void set_lr(torch::optim::Optimizer& opt, double lr, const std::vector<double>& scales) {
  size_t i = 0;
  for (auto& group : opt.param_groups()) {
    group.options().set_lr(lr * (i < scales.size() ? scales[i] : 1.0));
    ++i;
  }
}

double clip_gradients(const std::vector<at::Tensor>& params, const OptimConfig& o) {
  if (o.grad_clip <= 0) return 0;
  return torch::nn::utils::clip_grad_norm_(params, o.grad_clip);
}

}  // namespace smoe::train
