#include "comm/router.h"

#include <chrono>
#include <cstdlib>

#include "comm/nccl.h"
#include "core/error.h"

namespace smoe::comm {

DeviceRouter::DeviceRouter(std::unique_ptr<Communicator> host, DeviceFactory factory)
    : host_(std::move(host)), factory_(std::move(factory)) {}

DeviceRouter::DeviceRouter(std::unique_ptr<Communicator> host)
    : DeviceRouter(std::move(host), [](Communicator& h, int device) { return open_nccl(h, device); }) {}

std::string DeviceRouter::name() const { return device_ ? host_->name() + "+" + device_->name() : host_->name(); }

Communicator& DeviceRouter::pick(const Buffer& b) {
  if (!b.device.cuda) return *host_;
  SMOE_CHECK(device_collectives_, "rank {}: a CUDA buffer reached the communicator while device collectives are off",
             rank());
  if (!device_) {
    device_ = factory_(*host_, b.device.index);
    device_index_ = b.device.index;
  }
  SMOE_CHECK(b.device.index == device_index_, "rank {}: CUDA buffer on device {}, communicator on device {}", rank(),
             b.device.index, device_index_);
  return *device_;
}

void DeviceRouter::abort(int code, const std::string& why) {
  host_->abort(code, why);
  std::abort();  // host_->abort never returns; this tells the compiler so
}

namespace {

// Counts one call into `traffic` when it returns (a call that throws ends the job).
class Counted {
 public:
  Counted(Traffic& traffic, Op op, double payload, WireBytes wire)
      : traffic_(traffic), op_(op), payload_(payload), wire_(wire), start_(std::chrono::steady_clock::now()) {}
  ~Counted() {
    traffic_.add(op_, payload_, wire_,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  WireBytes& wire() { return wire_; }

 private:
  Traffic& traffic_;
  Op op_;
  double payload_;
  WireBytes wire_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

void DeviceRouter::barrier() {
  heartbeat::Waiting w("barrier");
  Counted c(traffic_, Op::barrier, 0, {});
  host_->barrier();
}

void DeviceRouter::broadcast(Buffer buf, int root) {
  heartbeat::Waiting w("broadcast");
  const double n = static_cast<double>(buf.bytes());
  Counted c(traffic_, Op::broadcast, n, chain_broadcast_bytes(n, rank(), root, size()));
  pick(buf).broadcast(buf, root);
}

void DeviceRouter::allreduce(Buffer buf, ReduceOp op) {
  heartbeat::Waiting w("allreduce");
  const double n = static_cast<double>(buf.bytes());
  Counted c(traffic_, Op::allreduce, n, ring_allreduce_bytes(n, size()));
  pick(buf).allreduce(buf, op);
}

void DeviceRouter::allgather(Buffer send, Buffer recv) {
  SMOE_CHECK(send.device.cuda == recv.device.cuda, "allgather: send and receive buffers on different devices");
  heartbeat::Waiting w("allgather");
  const double n = static_cast<double>(send.bytes());
  Counted c(traffic_, Op::allgather, n, ring_allgather_bytes(n, size()));
  pick(send).allgather(send, recv);
}

std::vector<std::string> DeviceRouter::gather_bytes(std::string_view bytes, int root) {
  heartbeat::Waiting w("gather");
  const double n = static_cast<double>(bytes.size());
  Counted c(traffic_, Op::gather, n, {rank() == root ? 0.0 : n, 0.0});
  std::vector<std::string> parts = host_->gather_bytes(bytes, root);
  if (rank() == root)
    for (size_t r = 0; r < parts.size(); ++r)
      if (static_cast<int>(r) != root) c.wire().recv += static_cast<double>(parts[r].size());
  return parts;
}

void DeviceRouter::send(int dest, int tag, std::string_view payload) {
  const double n = static_cast<double>(payload.size());
  Counted c(traffic_, Op::message, n, {n, 0.0});
  host_->send(dest, tag, payload);
}

Message DeviceRouter::recv(int source, int tag) {
  heartbeat::Waiting w("a message from rank " + std::to_string(source));
  Counted c(traffic_, Op::message, 0, {});
  Message m = host_->recv(source, tag);
  c.wire().recv = static_cast<double>(m.payload.size());
  return m;
}

std::optional<Message> DeviceRouter::try_recv(int source, int tag) {
  std::optional<Message> m = host_->try_recv(source, tag);
  if (m) traffic_.add(Op::message, 0, {0.0, static_cast<double>(m->payload.size())}, 0.0);
  return m;
}

}  // namespace smoe::comm
