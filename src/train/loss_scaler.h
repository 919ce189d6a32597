// Dynamic loss scaling for float16 training (Micikevicius et al., "Mixed
// Precision Training"; the rule of PyTorch's GradScaler). float16's range
// ends at 65504 and its smallest normal number is 6e-5: gradients of a
// float16 forward pass underflow unless the loss is multiplied by a large
// scale S before backward(). The gradients are then divided by S before the
// optimiser step; a step whose gradients hold an inf or a nan is skipped and
// S halved; after `growth_interval` good steps in a row S doubles. S stays a
// power of two, so scaling and unscaling are exact.
//
// Device-agnostic tensor operations (no fused CUDA kernel): it runs, and is
// tested, on the CPU. bfloat16 and float32 need no scaling (a disabled
// scaler is a no-op).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace smoe::train {

class LossScaler {
 public:
  struct Options {
    double init_scale = 65536.0;  // 2^16, PyTorch's default
    double growth_factor = 2.0;
    double backoff_factor = 0.5;
    int64_t growth_interval = 2000;
  };
  LossScaler() = default;  // disabled
  LossScaler(bool enabled, Options options);

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  int64_t skipped_steps() const { return skipped_; }
  // Resuming: the scale and good-step count saved after an epoch.
  void restore(double scale, int64_t good_steps);
  int64_t good_steps() const { return good_steps_; }

  // loss * S (the loss itself when disabled).
  at::Tensor scaled(const at::Tensor& loss) const;
  // Divides the gradients of `params` by S in place; true when all of them
  // are finite. One host sync.
  bool unscale(const std::vector<at::Tensor>& params) const;
  // After a step: halves S on `found_inf` (the step was skipped), doubles it
  // after growth_interval finite steps in a row.
  void update(bool found_inf);

 private:
  bool enabled_ = false;
  Options o_;
  double scale_ = 1.0;
  int64_t good_steps_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace smoe::train
