// What a rank moved through its communicator: per kind of operation, the
// calls, the payload, the bytes it sent and received, and the seconds spent
// inside (waiting on other ranks included). DeviceRouter counts every call
// that passes through it; a stage's record holds the difference over the
// stage (pipeline/stage_traffic.h) and `smoe scaling` tabulates it.
//
// The bytes on the wire depend on the algorithm the MPI library or NCCL
// picks, which smoe cannot see. They are counted as the textbook algorithms
// move them (the model of docs/scaling.md, the one `smoe scaling` predicts
// with), for a payload of n bytes on P ranks:
//   allreduce  ring (reduce-scatter + allgather): each rank sends and
//              receives 2 (P-1)/P n
//   broadcast  pipelined chain from the root: each rank but the chain's last
//              sends n, each rank but the root receives n
//   allgather  ring, n per rank: each rank sends and receives (P-1) n
//   gather     each rank but the root sends its part, the root receives them
//   message    point-to-point control messages: their payload
//   barrier    no payload
// With one rank every collective moves nothing. Thread-safe (rank 0's
// scheduler thread sends while its worker computes). Torch-free.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace smoe::comm {

enum class Op { barrier, broadcast, allreduce, allgather, gather, message };
constexpr int kOps = 6;
const char* op_name(Op op);

struct OpCount {
  int64_t calls = 0;
  double payload_bytes = 0, sent_bytes = 0, recv_bytes = 0, seconds = 0;
};

struct TrafficCounts {
  std::array<OpCount, kOps> ops{};
  const OpCount& operator[](Op op) const { return ops[static_cast<size_t>(op)]; }
  double sent_bytes() const;
  double recv_bytes() const;
  double seconds() const;
  // Counts since `earlier` (a snapshot of the same counter).
  TrafficCounts since(const TrafficCounts& earlier) const;
};

// The bytes one rank sends and receives for one collective (the model above).
struct WireBytes {
  double sent = 0, recv = 0;
};
WireBytes ring_allreduce_bytes(double payload, int ranks);
WireBytes chain_broadcast_bytes(double payload, int rank, int root, int ranks);
WireBytes ring_allgather_bytes(double per_rank, int ranks);

class Traffic {
 public:
  void add(Op op, double payload, WireBytes wire, double seconds);
  TrafficCounts snapshot() const;

 private:
  mutable std::mutex mu_;
  TrafficCounts counts_;
};

// {"allreduce": {"calls", "payload_bytes", "sent_bytes", "recv_bytes",
// "seconds"}, ...} for the kinds with calls.
nlohmann::json to_json(const TrafficCounts& c);

}  // namespace smoe::comm
