// FakeDevice: the device communicator (NCCL's place) for tests on machines
// without a GPU. "CUDA" buffers are host memory labelled with a device, so
// its collectives forward to the host communicator and give real results;
// like ncclCommInitRank, creating it is collective and fails on every rank
// when two ranks of the group claim the same device ("duplicate GPU").
#pragma once

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/error.h"

namespace smoe::testing {

class FakeDevice final : public comm::Communicator {
 public:
  // What the ranks of one group share: the devices claimed and the calls made.
  struct Group {
    std::mutex m;
    std::map<int, std::vector<int>> ranks_on;  // device -> ranks
    std::atomic<int> created{0};
    std::atomic<int> calls{0};
  };

  FakeDevice(comm::Communicator& host, int device, Group& group) : host_(host), group_(group) {
    {
      std::lock_guard<std::mutex> lock(group_.m);
      group_.ranks_on[device].push_back(host.rank());
    }
    host_.barrier();  // every rank has claimed its device
    std::lock_guard<std::mutex> lock(group_.m);
    for (const auto& [dev, ranks] : group_.ranks_on)
      SMOE_CHECK(ranks.size() == 1, "fake NCCL init: duplicate GPU: {} ranks on device {}", ranks.size(), dev);
    ++group_.created;
  }

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  std::string name() const override { return "fake-device"; }
  void barrier() override { host_.barrier(); }
  void broadcast(comm::Buffer b, int root) override {
    ++group_.calls;
    host_.broadcast(on_host(b), root);
  }
  void allreduce(comm::Buffer b, comm::ReduceOp op) override {
    ++group_.calls;
    host_.allreduce(on_host(b), op);
  }
  void allgather(comm::Buffer send, comm::Buffer recv) override {
    ++group_.calls;
    host_.allgather(on_host(send), on_host(recv));
  }
  std::vector<std::string> gather_bytes(std::string_view bytes, int root) override {
    return host_.gather_bytes(bytes, root);
  }
  void send(int dest, int tag, std::string_view payload) override { host_.send(dest, tag, payload); }
  comm::Message recv(int source, int tag) override { return host_.recv(source, tag); }
  std::optional<comm::Message> try_recv(int source, int tag) override { return host_.try_recv(source, tag); }
  [[noreturn]] void abort(int code, const std::string& why) override {
    host_.abort(code, why);
    std::abort();  // the host communicator does not return either
  }

 private:
  static comm::Buffer on_host(comm::Buffer b) {
    b.device = comm::Device{};
    return b;
  }
  comm::Communicator& host_;
  Group& group_;
};

}  // namespace smoe::testing
