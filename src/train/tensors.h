// Small conversions between tensors and standard containers (for JSON records).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace smoe::train {

inline std::vector<double> to_doubles(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

inline std::vector<int64_t> to_int64s(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

}  // namespace smoe::train
