// Per-rank runtime: intra-op threads (ranks x threads must not exceed the
// node's cores) and the device (rank r uses GPU local_rank mod #GPUs when
// CUDA is available and allowed).
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "core/config.h"

namespace smoe::pipeline {

struct RuntimeInfo {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  int local_size = 1;
  int threads = 1;
  c10::Device device = c10::Device(c10::kCPU);
  std::string device_name() const { return device.str(); }
};

// Applies runtime.threads and runtime.device; returns what was chosen.
RuntimeInfo setup_runtime(const RuntimeConfig& config, int rank, int world, int local_rank, int local_size);

}  // namespace smoe::pipeline
