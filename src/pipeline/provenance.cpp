#include "pipeline/provenance.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/util/Exception.h>
#include <torch/version.h>
#include <unistd.h>

#include <fmt/format.h>

#include "comm/mpi_communicator.h"
#include "comm/nccl.h"
#include "core/affinity.h"
#include "core/build_info.h"
#include "data/shard.h"

namespace smoe::pipeline {
std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

nlohmann::json cuda_versions() {
  nlohmann::json out;
  try {
    // A CPU-only libtorch's hooks throw here; a CUDA one answers with the
    // versions it was built with, GPU or not.
    const auto& hooks = at::detail::getCUDAHooks();
    const long runtime = hooks.versionCUDART();
    out["libtorch_cuda"] = fmt::format("{}.{}", runtime / 1000, (runtime % 1000) / 10);
    if (hooks.compiledWithCuDNN()) {
      const long v = hooks.versionCuDNN();  // 9.x: x*100 + 90000 + patch; 8.x: x*100 + 8000 + patch
      out["cudnn"] = v >= 90000 ? fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
                                : fmt::format("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100);
    }
  } catch (const c10::Error&) {
    return nullptr;
  }
  if (comm::nccl_plugin_built()) out.update(nlohmann::json::parse(comm::nccl_plugin_versions()));
  return out;
}

std::string version_line() {
  std::string line = fmt::format("smoe {} (commit {}), libtorch {}, {}, HDF5 {}", build::version(), build::commit(),
                                 TORCH_VERSION, comm::mpi_library_version(), data::hdf5_version());
  const nlohmann::json cuda = cuda_versions();
  if (cuda.is_null()) return line + ", CPU only";
  line += fmt::format(", CUDA {}", cuda["libtorch_cuda"].get<std::string>());
  if (cuda.contains("cudnn")) line += fmt::format(", cuDNN {}", cuda["cudnn"].get<std::string>());
  if (cuda.contains("nccl"))
    line += fmt::format(", NCCL {} (CUDA runtime {}, driver {}), GPUs: {}", cuda["nccl"].get<std::string>(),
                        cuda["cuda_runtime"].get<std::string>(), cuda["cuda_driver"].get<std::string>(),
                        cuda["gpus"].empty() ? "none" : cuda["gpus"].dump());
  else if (cuda.contains("error"))
    line += fmt::format(", NCCL plugin: {}", cuda["error"].get<std::string>());
  else
    line += ", no NCCL plugin";
  return line;
}

nlohmann::json provenance(comm::Communicator& comm, const RuntimeInfo& rt) {
  const std::vector<int> cpus = affinity_cpus();
  const nlohmann::json mine = {
      {"rank", comm.rank()},        {"host", host_name()},  {"pid", static_cast<int64_t>(getpid())},
      {"affinity", cpu_list(cpus)}, {"cores", cpus.size()}, {"threads", rt.threads},
      {"device", rt.device_name()}};
  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& text : comm.allgather_bytes(mine.dump())) ranks.push_back(nlohmann::json::parse(text));
  return {{"smoe_version", build::version()},
          {"git_commit", build::commit()},
          {"libtorch", TORCH_VERSION},
          {"mpi", comm::mpi_library_version()},
          {"hdf5", data::hdf5_version()},
          {"cuda", cuda_versions()},
          {"ranks", ranks}};
}

}  // namespace smoe::pipeline
