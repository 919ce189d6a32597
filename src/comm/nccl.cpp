#include "comm/nccl.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace smoe::comm {
namespace {

std::string self_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

}  // namespace

bool nccl_plugin_built() {
#ifdef SMOE_NCCL_PLUGIN_BUILT
  return true;
#else
  return false;
#endif
}

namespace {

// The plugin's handle, opened once per process; throws with every path tried.
void* plugin_handle() {
  SMOE_CHECK(nccl_plugin_built(),
             "this smoe was built without the NCCL plugin (configure with -DSMOE_WITH_NCCL=ON and a CUDA toolkit)");
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("SMOE_NCCL_PLUGIN")) candidates.push_back(env);
  candidates.push_back(self_dir() + "/libsmoe_nccl.so");
  candidates.push_back(self_dir() + "/../lib/smoe/libsmoe_nccl.so");
  std::string errors;
  void* handle = nullptr;
  for (const auto& path : candidates) {
    if (!std::filesystem::exists(path)) continue;
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle) break;
    errors += fmt::format(" {}: {};", path, dlerror());
  }
  SMOE_CHECK(handle, "cannot load the NCCL plugin libsmoe_nccl.so (set SMOE_NCCL_PLUGIN):{}",
             errors.empty() ? " not found beside the executable" : errors);
  return handle;
}

}  // namespace

std::unique_ptr<Communicator> open_nccl(Communicator& bootstrap, int device) {
  auto create = reinterpret_cast<NcclCreateFn>(dlsym(plugin_handle(), kNcclCreateSymbol));
  SMOE_CHECK(create, "NCCL plugin has no symbol {}", kNcclCreateSymbol);
  char error[512] = {0};
  Communicator* comm = create(&bootstrap, device, error, sizeof error);
  SMOE_CHECK(comm, "{}", error);
  return std::unique_ptr<Communicator>(comm);
}

std::string nccl_plugin_versions() {
  try {
    auto versions = reinterpret_cast<NcclVersionsFn>(dlsym(plugin_handle(), kNcclVersionsSymbol));
    SMOE_CHECK(versions, "NCCL plugin has no symbol {}", kNcclVersionsSymbol);
    char json[2048] = {0};
    versions(json, sizeof json);
    return json;
  } catch (const std::exception& e) {
    return nlohmann::json{{"error", e.what()}}.dump();
  }
}

}  // namespace smoe::comm
