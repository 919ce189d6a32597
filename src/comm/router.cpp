#include "comm/router.h"

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

void DeviceRouter::allgather(Buffer send, Buffer recv) {
  SMOE_CHECK(send.device.cuda == recv.device.cuda, "allgather: send and receive buffers on different devices");
  heartbeat::Waiting w("allgather");
  pick(send).allgather(send, recv);
}

}  // namespace smoe::comm
