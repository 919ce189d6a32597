// DeviceRouter: one Communicator for callers that may hold host or CUDA
// buffers. Host buffers go to the host communicator (MPI, or threads in
// tests); CUDA buffers to the device communicator (NCCL), which is created on
// first use — collectively, so every rank must make its first CUDA call at the
// same point — and only if CUDA buffers ever appear.
#pragma once

#include <functional>
#include <memory>

#include "comm/communicator.h"
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
  // ranks, not a stall of this one (core/heartbeat.h).
  void barrier() override {
    heartbeat::Waiting w("barrier");
    host_->barrier();
  }
  void broadcast(Buffer buf, int root) override {
    heartbeat::Waiting w("broadcast");
    pick(buf).broadcast(buf, root);
  }
  void allreduce(Buffer buf, ReduceOp op) override {
    heartbeat::Waiting w("allreduce");
    pick(buf).allreduce(buf, op);
  }
  void allgather(Buffer send, Buffer recv) override;
  std::vector<std::string> gather_bytes(std::string_view bytes, int root) override {
    heartbeat::Waiting w("gather");
    return host_->gather_bytes(bytes, root);
  }
  void send(int dest, int tag, std::string_view payload) override { host_->send(dest, tag, payload); }
  Message recv(int source, int tag) override {
    heartbeat::Waiting w("a message from rank " + std::to_string(source));
    return host_->recv(source, tag);
  }
  std::optional<Message> try_recv(int source, int tag) override { return host_->try_recv(source, tag); }
  [[noreturn]] void abort(int code, const std::string& why) override;

  Communicator& host() { return *host_; }

 private:
  Communicator& pick(const Buffer& b);

  std::unique_ptr<Communicator> host_;
  DeviceFactory factory_;
  std::unique_ptr<Communicator> device_;
  int device_index_ = -1;
  bool device_collectives_ = true;
};

}  // namespace smoe::comm
