// Where tensors live, and small conversions between tensors and standard
// containers (for JSON records).
//
// Placement, the one rule every stage follows:
// - a model, and every tensor its forward and backward passes take (inputs,
//   targets, weights, masks, indices), live on the stage's device: the
//   rank's (RuntimeInfo::device; a model's is device_of(module));
// - datasets, row caches and what a stage keeps across batches live on the
//   host, within runtime.memory_budget_mb; a batch goes to the device where
//   it is used (to_device, rows_to);
// - what is written to disk or into a record goes back to the host
//   (checkpoints are saved from CPU copies, so that their bytes do not
//   depend on the device, and load onto the device of the model or optimiser
//   they are for).
// The fake accelerator of the tests (tests/common/fake_accelerator.cpp)
// fails, as CUDA does, on any operator that mixes a device tensor with a
// CPU one, so a break of this rule fails the tests on a machine without GPU.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace smoe::train {

// A host tensor's copy on `device` (itself when already there); a pinned
// source is copied without blocking the host.
inline at::Tensor to_device(const at::Tensor& t, c10::Device device) {
  if (!t.defined() || t.device() == device) return t;
  return t.to(device, /*non_blocking=*/t.is_pinned());
}

// Rows `ids` of `t` (host or device) as a tensor on `device`.
inline at::Tensor rows_to(const at::Tensor& t, const std::vector<int64_t>& ids, c10::Device device) {
  const at::Tensor index = at::tensor(ids, at::TensorOptions().dtype(at::kLong));
  return to_device(t.index_select(0, to_device(index, t.device())), device);
}

inline std::vector<double> to_doubles(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

inline std::vector<int64_t> to_int64s(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

}  // namespace smoe::train
