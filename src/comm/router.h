// DeviceRouter: one Communicator for callers that may hold host or CUDA
// buffers. Host buffers go to the host communicator (MPI, or threads in
// tests); CUDA buffers to the device communicator (NCCL), which is created on
// first use — collectively, so every rank must make its first CUDA call at the
// same point — and only if CUDA buffers ever appear.
#pragma once

#include <functional>
#include <memory>

#include "comm/communicator.h"
#include "comm/traffic.h"
#include "core/heartbeat.h"

namespace smoe::comm {

class DeviceRouter final : public Communicator {
 public:
  using DeviceFactory = std::function<std::unique_ptr<Communicator>(Communicator& host, int device)>;

  DeviceRouter(std::unique_ptr<Communicator> host, DeviceFactory factory);
  // With open_nccl as the device factory.
  explicit DeviceRouter(std::unique_ptr<Communicator> host);

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string name() const override;
  // CUDA buffers reach the device communicator unless device collectives
  // were turned off (ranks sharing a GPU, which NCCL refuses): then the
  // tensor adapters stage them through the host communicator.
  bool takes_device_buffers() const override { return device_collectives_; }
  void set_device_collectives(bool on) { device_collectives_ = on; }
  // Time spent inside a collective or a blocking receive is waiting on other
  // ranks, not a stall of this one (core/heartbeat.h). Every call is counted
  // in traffic() (comm/traffic.h).
  void barrier() override;
  void broadcast(Buffer buf, int root) override;
  void allreduce(Buffer buf, ReduceOp op) override;
  void allgather(Buffer send, Buffer recv) override;
  std::vector<std::string> gather_bytes(std::string_view bytes, int root) override;
  void send(int dest, int tag, std::string_view payload) override;
  Message recv(int source, int tag) override;
  std::optional<Message> try_recv(int source, int tag) override;
  const Traffic* traffic() const override { return &traffic_; }
  [[noreturn]] void abort(int code, const std::string& why) override;

  Communicator& host() { return *host_; }

 private:
  Communicator& pick(const Buffer& b);

  std::unique_ptr<Communicator> host_;
  DeviceFactory factory_;
  std::unique_ptr<Communicator> device_;
  int device_index_ = -1;
  bool device_collectives_ = true;
  Traffic traffic_;
};

}  // namespace smoe::comm
