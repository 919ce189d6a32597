// One rank alone (MPI_COMM_SELF's part): every collective of a group of
// one, where a reduction or a broadcast leaves the buffer as it is and a
// gather returns the rank's own contribution. For code written once for P
// ranks that a single process also runs (the K-means of cluster/kmeans.h
// on rows a process holds whole). Control messages go to itself.
#pragma once

#include <deque>

#include "comm/communicator.h"

namespace smoe::comm {

class SoloCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "solo"; }

  void barrier() override {}
  void broadcast(Buffer buf, int root) override;
  void allreduce(Buffer buf, ReduceOp op) override;
  void allgather(Buffer send, Buffer recv) override;
  std::vector<std::string> gather_bytes(std::string_view bytes, int root) override;

  void send(int dest, int tag, std::string_view payload) override;
  Message recv(int source, int tag) override;
  std::optional<Message> try_recv(int source, int tag) override;

  [[noreturn]] void abort(int code, const std::string& why) override;

 private:
  std::deque<Message> mailbox_;
};

}  // namespace smoe::comm
