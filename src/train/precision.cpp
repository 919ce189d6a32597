#include "train/precision.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/Device.h>

#include <fstream>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "models/torch_compat.h"

namespace smoe::train {

bool cpu_has_native_bf16() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream flags(line.substr(line.find(':') + 1));
    std::string f;
    while (flags >> f)
      if (f == "avx512_bf16" || f == "amx_bf16") return true;
    return false;  // the first CPU's flags are every CPU's
  }
  return false;
}

namespace {

// Compute capability 8.0 (Ampere) or newer with cuDNN 8 computes bfloat16
// convolutions natively (false in a CPU-only libtorch).
bool cuda_has_native_bf16() { return at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8(); }

}  // namespace

PrecisionPlan plan_precision(Precision requested, const c10::Device& device) {
  PrecisionPlan p;
  p.requested = p.used = requested;
  if (requested == Precision::automatic) {
    // The fastest the device computes natively: no reason to give when
    // that is float32.
    p.used = device.is_cuda() ? (cuda_has_native_bf16() ? Precision::bfloat16 : Precision::float16)
             : device.is_cpu() && cpu_has_native_bf16() ? Precision::bfloat16
                                                        : Precision::float32;
    p.loss_scaling = p.used == Precision::float16;
    return p;
  }
  if (requested == Precision::float32) return p;
  if (requested == Precision::float16) {
    // The scaler runs wherever float16 was asked for, so that its steps are
    // the same (and tested) on every device.
    p.loss_scaling = true;
    if (!device.is_cuda()) {
      p.used = Precision::float32;
      p.reason = "float16 convolutions run in software off a GPU: float32 forward passes (loss scaling still on)";
    }
    return p;
  }
  if (device.is_cuda()) {
    if (!cuda_has_native_bf16()) {
      p.used = Precision::float32;
      p.reason = "this GPU has no native bfloat16 convolutions (compute capability below 8.0 or cuDNN before 8)";
    }
  } else if (!device.is_cpu() || !cpu_has_native_bf16()) {
    p.used = Precision::float32;
    p.reason = device.is_cpu() ? "this CPU has no bfloat16 instructions (no avx512_bf16 or amx_bf16 in /proc/cpuinfo)"
                               : "bfloat16 autocast is not known to run natively on " + device.str();
  }
  return p;
}

ChannelsLastScope::ChannelsLastScope(std::vector<at::Tensor> params, bool enable) {
  if (!enable) return;
  for (const auto& p : params)
    if (p.dim() == 4 && p.device().is_cpu() && p.size(0) < 8) {
      static std::once_flag once;
      std::call_once(once, [&] {
        log::warn(
            "channels_last not applied: a convolution has {} output channels (fewer than 8), where "
            "libtorch 1.13's oneDNN channels-last kernels write out of bounds",
            p.size(0));
      });
      return;
    }
  for (auto& p : params)
    if (p.dim() == 4) {
      p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
      params_.push_back(p);
    }
}

ChannelsLastScope::~ChannelsLastScope() {
  for (auto& p : params_) p.set_data(p.data().contiguous());
}

PrecisionPlan plan_training_precision(Precision requested, const c10::Device& device) {
  PrecisionPlan plan = plan_precision(requested, device);
  static std::once_flag once;
  if (!plan.reason.empty())
    std::call_once(once, [&] {
      log::warn("{} requested, {} used: {}", options::name(plan.requested), options::name(plan.used), plan.reason);
    });
  return plan;
}

AutocastScope::AutocastScope(Precision precision, const c10::Device& device) {
  if (precision != Precision::bfloat16 && precision != Precision::float16) return;
  active_ = true;
  type_ = static_cast<int>(device.type());
  was_enabled_ = compat::autocast_enabled(device.type());
  dtype_before_ = static_cast<int>(compat::autocast_dtype(device.type()));
  compat::set_autocast_dtype(device.type(), precision == Precision::float16 ? at::kHalf : at::kBFloat16);
  compat::set_autocast_enabled(device.type(), true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The casts of the weights cached for this forward pass are dropped when
  // the outermost scope ends (the weights change at the next step).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  const auto type = static_cast<c10::DeviceType>(type_);
  compat::set_autocast_enabled(type, was_enabled_);
  compat::set_autocast_dtype(type, static_cast<at::ScalarType>(dtype_before_));
}

}  // namespace smoe::train
