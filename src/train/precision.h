// How a training loop's forward passes run (issues #14, #27). Reduced
// precision (<section>.precision): float16 on GPUs, with dynamic loss
// scaling (train/loss_scaler.h); auto picks the fastest native type; or bfloat16
// autocast of the forward pass (convolutions and matrix products in
// bfloat16; BatchNorm statistics, losses, gradients, optimiser state and
// checkpoints stay float32), where the hardware computes bfloat16 natively —
// a CPU with AVX-512 BF16 or AMX, or a CUDA device of compute capability 8.0
// or newer. Elsewhere bfloat16 would run in oneDNN's reference kernels (about
// 20x slower on this project's CPU), so a request falls back to float32 and
// says why; the report records both. Memory format (<section>.channels_last):
// convolution weights in channels-last layout while training.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "train/optim_options.h"

namespace c10 {
struct Device;
}

namespace smoe::train {

struct PrecisionPlan {
  Precision requested = Precision::float32;
  Precision used = Precision::float32;  // what the forward passes run in (never automatic)
  std::string reason;                   // why used differs from requested (empty when it does not)
  bool loss_scaling = false;            // dynamic loss scaling (float16; train/loss_scaler.h)
};

// Whether this CPU has bfloat16 instructions (avx512_bf16 or amx_bf16 in
// /proc/cpuinfo's flags).
bool cpu_has_native_bf16();

// What `requested` runs as on `device`.
PrecisionPlan plan_precision(Precision requested, const c10::Device& device);
// plan_precision for a training loop: a fallback's reason is logged once per process.
PrecisionPlan plan_training_precision(Precision requested, const c10::Device& device);

// Keeps the 4-D tensors among `params` (convolution weights) in
// channels-last memory format for its lifetime when `enable`, so that
// oneDNN and cuDNN run their preferred NHWC kernels (activations follow the
// weights' format), and puts them back in the usual layout at the end, even
// when training throws. Values are unchanged; only their memory order is.
// Not on CPU networks with a convolution of fewer than 8 output channels:
// there libtorch 1.13's oneDNN NHWC kernels write past their buffers
// (valgrind: tiny-ResNets of width 4-6 corrupt the heap, 8 and more do not),
// so the scope leaves the layout alone and says so once.
class ChannelsLastScope {
 public:
  ChannelsLastScope(std::vector<at::Tensor> params, bool enable);
  ~ChannelsLastScope();
  bool active() const { return !params_.empty(); }
  ChannelsLastScope(const ChannelsLastScope&) = delete;
  ChannelsLastScope& operator=(const ChannelsLastScope&) = delete;

 private:
  std::vector<at::Tensor> params_;
};

// Autocast to bfloat16 or float16 on `device` for its lifetime when
// `precision` (a plan's `used`) is one of them (nothing otherwise). Wrap the forward pass and the loss; run
// backward() outside.
class AutocastScope {
 public:
  AutocastScope(Precision precision, const c10::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false, was_enabled_ = false;
  int type_ = 0;          // c10::DeviceType of the device
  int dtype_before_ = 0;  // at::ScalarType autocast used before
};

}  // namespace smoe::train
