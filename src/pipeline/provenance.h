// Where and with what a run ran, for report.json: smoe's version and git
// commit, the libtorch, MPI and HDF5 libraries, CUDA's (cuda_versions), and per rank its host, pid,
// the cores it is bound to, its intra-op threads and its device.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "comm/communicator.h"
#include "pipeline/runtime.h"

namespace smoe::pipeline {

// Collective; the same JSON on every rank.
nlohmann::json provenance(comm::Communicator& comm, const RuntimeInfo& rt);

// This machine's host name.
std::string host_name();

// What a CUDA build of libtorch was built with and what this machine has:
// {"libtorch_cuda": "12.4", "cudnn": "9.1.0"} plus, where the NCCL plugin is
// built, comm::nccl_plugin_versions()'s keys (NCCL, CUDA runtime and driver,
// the GPUs' names); null for a CPU-only libtorch.
nlohmann::json cuda_versions();

// "smoe 0.1.0 (commit 1a2b3c4d5e6f), libtorch 1.13.1, Open MPI v4.1.4, HDF5 1.10.8, CPU only"
// or "..., CUDA 12.4, cuDNN 9.1.0, NCCL 2.22.3 (CUDA runtime 12.4, driver none), GPUs: none"
std::string version_line();

}  // namespace smoe::pipeline
