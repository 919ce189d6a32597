#include "train/loss_scaler.h"

#include <ATen/ATen.h>

#include "core/error.h"

namespace smoe::train {

LossScaler::LossScaler(bool enabled, Options options) : enabled_(enabled), o_(options) {
  SMOE_CHECK(o_.init_scale > 0 && o_.growth_factor > 1 && o_.backoff_factor > 0 && o_.backoff_factor < 1 &&
                 o_.growth_interval >= 1,
             "loss scaler: init_scale {} growth {} backoff {} interval {}", o_.init_scale, o_.growth_factor,
             o_.backoff_factor, o_.growth_interval);
  scale_ = enabled_ ? o_.init_scale : 1.0;
}

void LossScaler::restore(double scale, int64_t good_steps) {
  if (!enabled_) return;
  SMOE_CHECK(scale > 0, "loss scaler: a saved scale of {}", scale);
  scale_ = scale;
  good_steps_ = good_steps;
}

at::Tensor LossScaler::scaled(const at::Tensor& loss) const { return enabled_ ? loss * scale_ : loss; }

bool LossScaler::unscale(const std::vector<at::Tensor>& params) const {
  if (!enabled_) return true;
  const double inverse = 1.0 / scale_;  // exact: scale_ is a power of two
  at::Tensor finite;
  for (const auto& p : params) {
    at::Tensor g = p.grad();
    if (!g.defined()) continue;
    g.mul_(inverse);
    at::Tensor ok = at::isfinite(g).all();
    finite = finite.defined() ? finite.logical_and(ok) : ok;
  }
  return !finite.defined() || finite.item<bool>();
}

void LossScaler::update(bool found_inf) {
  if (!enabled_) return;
  if (found_inf) {
    scale_ *= o_.backoff_factor;
    good_steps_ = 0;
    ++skipped_;
  } else if (++good_steps_ == o_.growth_interval) {
    scale_ *= o_.growth_factor;
    good_steps_ = 0;
  }
}

}  // namespace smoe::train
