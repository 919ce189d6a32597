// Where and with what a run ran, for report.json: smoe's version and git
// commit, the libtorch, MPI and HDF5 libraries, and per rank its host, pid,
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

// "smoe 0.1.0 (commit 1a2b3c4d5e6f), libtorch 1.13.1, Open MPI v4.1.4, HDF5 1.10.8"
std::string version_line();

}  // namespace smoe::pipeline
