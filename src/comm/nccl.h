// The NCCL communicator for CUDA buffers. It lives in a plugin
// (libsmoe_nccl.so, built from nccl_plugin.cpp when the CUDA toolkit's NCCL is
// found) that is opened only when CUDA tensors are reduced: the smoe binaries
// themselves never link NCCL or the CUDA runtime, so they start on machines
// without either. The NCCL communicator is created from a unique id that the
// bootstrap communicator (MPI) broadcasts from rank 0.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace smoe::comm {

// Whether this build produced the plugin (SMOE_WITH_NCCL).
bool nccl_plugin_built();

// Opens the plugin and creates an NCCL communicator over the ranks of
// `bootstrap`, using CUDA device `device` on this rank. Collective: every rank
// of `bootstrap` must call it. Throws smoe::Error with the reason when the
// plugin, NCCL, the CUDA runtime or a CUDA device is missing.
std::unique_ptr<Communicator> open_nccl(Communicator& bootstrap, int device);

// What the plugin sees of NCCL and CUDA on this machine, one JSON object:
// {"nccl": "2.22.3", "cuda_runtime": "12.4", "cuda_driver": "12.8",
//  "gpus": ["NVIDIA H100 80GB HBM3", ...]} (driver "none" and no GPUs on a
// machine without a driver), or {"error": "..."} when the plugin is not built
// or does not load. Never throws.
std::string nccl_plugin_versions();

// The plugin's entry points (C linkage so that dlsym finds them).
using NcclCreateFn = Communicator* (*)(Communicator* bootstrap, int device, char* error, size_t error_size);
constexpr const char* kNcclCreateSymbol = "smoe_nccl_create";
using NcclVersionsFn = void (*)(char* json, size_t json_size);
constexpr const char* kNcclVersionsSymbol = "smoe_nccl_versions";

}  // namespace smoe::comm
