// The runtime section of the configuration (runtime.*): threads, devices,
// memory budgets, progress and stall detection. Each key beside its field
// (core/options.h).
#pragma once

#include <cstdint>
#include <string>

#include "core/options.h"

namespace smoe {

// runtime.device: a device type, or the CUDA devices when there are some.
enum class DeviceKind { automatic, cpu, cuda, privateuseone };
inline const options::Names<DeviceKind>& option_names(DeviceKind) {
  static const options::Names<DeviceKind> n{{DeviceKind::automatic, "auto"},
                                            {DeviceKind::cpu, "cpu"},
                                            {DeviceKind::cuda, "cuda"},
                                            {DeviceKind::privateuseone, "privateuseone"}};
  return n;
}

struct RuntimeConfig {
  int64_t threads = 0;  // intra-op threads per rank; 0 = cores / ranks on the node
  DeviceKind device = DeviceKind::automatic;
  int64_t log_every = 50;                  // steps between progress lines
  int64_t memory_budget_mb = 8192;         // per rank, for smoe's caches: data splits and trunk features
  int64_t device_memory_budget_mb = 2048;  // per rank, for caches on a GPU: the experts' trunk features
  double stall_timeout_s = 1800;           // abort the job when a rank makes no progress this long (0 = never)

  void describe(options::Table& t) {
    t.key("threads", threads,
          "intra-op threads per rank (0: SLURM_CPUS_PER_TASK inside Slurm, else the cores the rank is bound to, "
          "else the node's cores divided by its ranks)")
        .at_least(0);
    t.key("device", device,
          "the device type (auto: CUDA when available; privateuseone: an out-of-tree libtorch backend, such as the "
          "tests' fake accelerator); each rank's device follows from the devices it sees (any Slurm GPU binding), "
          "so a type is named, never a device (cuda, not cuda:1)");
    t.key("log_every", log_every, "training steps between progress lines").at_least(1);
    t.key("memory_budget_mb", memory_budget_mb,
          "RAM per rank for smoe's caches (MiB): a data split loads whole when it fits (data.storage auto), then "
          "the trunk features stay in RAM when they fit in what is left (experts.trunk_cache auto)")
        .at_least(1);
    t.key("device_memory_budget_mb", device_memory_budget_mb,
          "device memory per rank for smoe's caches when runtime.device is not the CPU (MiB): the experts' trunk "
          "features, cached in RAM, are kept on the device too when they fit, so that batches need no copy (0: "
          "never)")
        .at_least(0);
    t.key("stall_timeout_s", stall_timeout_s,
          "abort the job, naming the rank, when a rank makes no progress (or every rank waits) this long; 0 = never")
        .at_least(0);
  }
};

}  // namespace smoe
