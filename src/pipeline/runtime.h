// Per-rank runtime: intra-op threads (ranks x threads must not exceed the
// node's cores) and the device. runtime.device names a device type (auto,
// cpu, cuda, privateuseone); which device of that type a rank uses follows
// from what the ranks of its node see (pipeline/device_choice.h), so any
// Slurm GPU binding works.
//
// Two ranks on one device is allowed, deliberately: NCCL refuses it
// ("duplicate GPU"), so then every rank's collectives on device tensors go
// through the host communicator (MPI) instead, and rank 0 says so at start.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <string>
#include <vector>

#include "pipeline/config.h"

namespace smoe::comm {
class Communicator;
}

namespace smoe::pipeline {

struct RuntimeInfo {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  int local_size = 1;
  int threads = 1;
  c10::Device device = c10::Device(c10::kCPU);
  std::string device_id;           // the device's UUID (CUDA), or type:index@host
  bool device_shared = false;      // some ranks of the job share a device: no NCCL
  std::vector<std::string> notes;  // for the log, once it is open
  std::string device_name() const { return device.str(); }
};

// Applies runtime.threads and runtime.device. Collective over `comm`: every
// rank calls it, and every rank throws the same error (naming the rank that
// met it) when one rank cannot get its device, or a device collective would
// need the NCCL plugin and it does not load. Writes nothing.
RuntimeInfo setup_runtime(const RuntimeConfig& config, comm::Communicator& comm, int local_rank, int local_size);

// The device type runtime.device names on a machine with `cuda_devices` GPUs
// (auto: CUDA when there is one).
c10::DeviceType wanted_device_type(DeviceKind wanted, int cuda_devices);

// Why a job cannot run its device collectives (empty when it can): CUDA on
// more than one rank, no device shared, needs the NCCL plugin, whose
// versions (comm::nccl_plugin_versions, JSON; asked only then) hold no error.
std::string nccl_refusal(c10::DeviceType type, int world, bool shared,
                         const std::function<std::string()>& plugin_versions);

// The ids of the devices of `type` this process sees, in index order.
std::vector<std::string> visible_devices(c10::DeviceType type);

}  // namespace smoe::pipeline
