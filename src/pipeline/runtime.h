// Per-rank runtime: intra-op threads (ranks x threads must not exceed the
// node's cores) and the device (local rank r uses GPU r when CUDA is
// available and allowed; one GPU per rank).
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

// The device of a rank (runtime.device: auto | cpu | cuda) on a node with
// `cuda_devices` GPUs and `local_size` ranks: the CPU, or GPU local_rank.
// Two ranks never share a GPU — NCCL refuses it ("duplicate GPU") — so more
// ranks on a node than GPUs is an error at start-up that names the ranks and
// the devices, unless runtime.device is cpu.
c10::Device choose_device(const std::string& wanted, int cuda_devices, int rank, int local_rank, int local_size);

}  // namespace smoe::pipeline
