#include "pipeline/runtime.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "comm/nccl.h"
#include "core/affinity.h"
#include "core/error.h"
#include "pipeline/cuda_device_id.h"
#include "pipeline/device_choice.h"
#include "pipeline/provenance.h"

namespace smoe::pipeline {
namespace {

int device_count(c10::DeviceType type) {
  if (type == c10::kCPU) return 1;
  if (type == c10::kCUDA) return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  return c10::impl::hasDeviceGuardImpl(type) ? c10::impl::getDeviceGuardImpl(type)->deviceCount() : 0;
}

}  // namespace

c10::DeviceType wanted_device_type(DeviceKind wanted, int cuda_devices) {
  switch (wanted) {
    case DeviceKind::automatic:
      return cuda_devices > 0 ? c10::kCUDA : c10::kCPU;
    case DeviceKind::cpu:
      return c10::kCPU;
    case DeviceKind::cuda:
      return c10::kCUDA;
    case DeviceKind::privateuseone:
      return c10::kPrivateUse1;
  }
  SMOE_ASSERT(false, "runtime.device: an enumerator without a device type");
  return c10::kCPU;
}

std::vector<std::string> visible_devices(c10::DeviceType type) {
  std::vector<std::string> ids;
  const int n = device_count(type);
  for (int i = 0; i < n; ++i)
    ids.push_back(type == c10::kCUDA  ? cuda_device_id(i)
                  : type == c10::kCPU ? fmt::format("cpu@{}", host_name())
                                      : fmt::format("{}:{}@{}", c10::DeviceTypeName(type, true), i, host_name()));
  return ids;
}

std::string nccl_refusal(c10::DeviceType type, int world, bool shared,
                         const std::function<std::string()>& plugin_versions) {
  if (type != c10::kCUDA || world <= 1 || shared) return "";  // no NCCL collective: the plugin stays unloaded
  const auto v = nlohmann::json::parse(plugin_versions(), nullptr, false);
  if (!v.is_discarded() && !v.contains("error")) return "";
  return fmt::format(
      "runtime.device is cuda on {} ranks, which needs smoe's NCCL plugin: {} (rebuild with NCCL's headers, or set "
      "runtime.device=cpu)",
      world, v.is_discarded() ? "its versions are unreadable" : v.value("error", std::string()));
}

RuntimeInfo setup_runtime(const RuntimeConfig& c, comm::Communicator& comm, int local_rank, int local_size) {
  RuntimeInfo r;
  r.rank = comm.rank();
  r.world = comm.size();
  r.local_rank = local_rank;
  r.local_size = std::max(local_size, 1);
  r.threads = threads_for_rank(static_cast<int>(c.threads), r.local_size);
  at::set_num_threads(r.threads);

  // Each rank: its device type and what it sees of it; an error is shared
  // below rather than thrown, so that no rank waits for one that left.
  std::string error;
  c10::DeviceType type = c10::kCPU;
  std::vector<std::string> visible;
  try {
    type = wanted_device_type(c.device, device_count(c10::kCUDA));
    visible = visible_devices(type);
    SMOE_CHECK(!visible.empty(), "runtime.device is {} but no {} device is available on rank {} (host {})",
               options::name(c.device), c10::DeviceTypeName(type, true), r.rank, host_name());
  } catch (const std::exception& e) {
    error = e.what();
  }
  nlohmann::json mine = {{"host", host_name()}, {"local_rank", local_rank}, {"visible", visible}, {"error", error}};
  std::vector<nlohmann::json> all;
  for (const auto& s : comm.allgather_bytes(mine.dump())) all.push_back(nlohmann::json::parse(s));
  for (const auto& j : all)
    if (!j["error"].get<std::string>().empty()) throw Error(j["error"].get<std::string>());

  std::vector<NodeRank> node;
  for (const auto& j : all)
    if (j["host"] == mine["host"]) node.push_back({j["local_rank"].get<int>(), j["visible"]});
  const DeviceChoice choice = choose_device_index(node, local_rank);
  r.device =
      type == c10::kCPU ? c10::Device(c10::kCPU) : c10::Device(type, static_cast<c10::DeviceIndex>(choice.index));
  r.device_id = choice.id;

  // Sharing, anywhere in the job, moves every rank's device collectives to
  // the host communicator: NCCL's communicator spans all ranks.
  int shares = type != c10::kCPU && !choice.shared_with.empty() ? 1 : 0;
  comm.allreduce(comm::host_buffer(&shares, 1), comm::ReduceOp::max);
  r.device_shared = shares > 0;
  if (r.device_shared && r.rank == 0)
    r.notes.push_back(fmt::format(
        "runtime.device: ranks share a {} device (rank 0's: {}, with local ranks {}); collectives on device tensors go "
        "through {} with host copies (NCCL needs one device per rank)",
        c10::DeviceTypeName(type, true), choice.id,
        choice.shared_with.empty() ? std::string("none") : fmt::format("{}", fmt::join(choice.shared_with, ", ")),
        comm.name()));

  // NCCL, when CUDA collectives will need it: checked now, before anything
  // is written, rather than at the first collective.
  const std::string refusal = nccl_refusal(type, r.world, r.device_shared, comm::nccl_plugin_versions);
  SMOE_CHECK(refusal.empty(), "{}", refusal);
  // The rank's device becomes the current one, so that nothing (a default
  // "cuda" tensor, a library's context) lands on device 0 by accident.
  if (type != c10::kCPU) c10::impl::getDeviceGuardImpl(type)->setDevice(r.device);
  return r;
}

}  // namespace smoe::pipeline
