#include "pipeline/provenance.h"

#include <torch/version.h>
#include <unistd.h>

#include <fmt/format.h>

#include "comm/mpi_communicator.h"
#include "core/affinity.h"
#include "core/build_info.h"
#include "data/shard.h"

namespace smoe::pipeline {
std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

std::string version_line() {
  return fmt::format("smoe {} (commit {}), libtorch {}, {}, HDF5 {}", build::version(), build::commit(), TORCH_VERSION,
                     comm::mpi_library_version(), data::hdf5_version());
}

nlohmann::json provenance(comm::Communicator& comm, const RuntimeInfo& rt) {
  const std::vector<int> cpus = affinity_cpus();
  const nlohmann::json mine = {{"rank", comm.rank()},
                               {"host", host_name()},
                               {"pid", static_cast<int64_t>(getpid())},
                               {"affinity", cpu_list(cpus)},
                               {"cores", cpus.size()},
                               {"threads", rt.threads},
                               {"device", rt.device_name()}};
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& text : comm.allgather_bytes(mine.dump())) ranks.push_back(nlohmann::json::parse(text));
  return {{"smoe_version", build::version()},
          {"git_commit", build::commit()},
          {"libtorch", TORCH_VERSION},
          {"mpi", comm::mpi_library_version()},
          {"hdf5", data::hdf5_version()},
          {"ranks", ranks}};
}

}  // namespace smoe::pipeline
