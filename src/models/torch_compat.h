// The one place that knows where libtorch's C++ API differs between the
// releases smoe supports (1.13 through the newest 2.x). Everything else is
// written against what they share; a difference found later goes here, not
// into an #if at the call site.
#pragma once

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#include <variant>

// True when the libtorch being compiled against is MAJOR.MINOR or newer.
#define SMOE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace smoe::compat {

// Alternative T of an option held in a libtorch variant (a convolution's
// padding): c10::variant up to 2.0, std::variant since 2.1. Ordinary lookup
// finds std::get; argument-dependent lookup adds c10::get for a c10::variant.
template <class T, class Variant>
const T& variant_get(const Variant& v) {
  using std::get;
  return get<T>(v);
}

// Autocast state per device type. 2.4 replaced the per-device functions
// (is_enabled / is_cpu_enabled, get_autocast_gpu_dtype / _cpu_dtype, ...)
// by ones that take the device type, and later releases drop the old ones.
inline bool autocast_enabled(c10::DeviceType type) {
#if SMOE_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

inline void set_autocast_enabled(c10::DeviceType type, bool enabled) {
#if SMOE_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(type, enabled);
#else
  if (type == c10::DeviceType::CUDA)
    at::autocast::set_enabled(enabled);
  else
    at::autocast::set_cpu_enabled(enabled);
#endif
}

inline c10::ScalarType autocast_dtype(c10::DeviceType type) {
#if SMOE_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                       : at::autocast::get_autocast_cpu_dtype();
#endif
}

inline void set_autocast_dtype(c10::DeviceType type, c10::ScalarType dtype) {
#if SMOE_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == c10::DeviceType::CUDA)
    at::autocast::set_autocast_gpu_dtype(dtype);
  else
    at::autocast::set_autocast_cpu_dtype(dtype);
#endif
}

}  // namespace smoe::compat
