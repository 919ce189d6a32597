#include "comm/traffic.h"

#include <nlohmann/json.hpp>

namespace smoe::comm {

const char* op_name(Op op) {
  switch (op) {
    case Op::barrier:
      return "barrier";
    case Op::broadcast:
      return "broadcast";
    case Op::allreduce:
      return "allreduce";
    case Op::allgather:
      return "allgather";
    case Op::gather:
      return "gather";
    case Op::message:
      return "message";
  }
  return "?";
}

namespace {

double total(const std::array<OpCount, kOps>& ops, double OpCount::*field) {
  double s = 0;
  for (const auto& o : ops) s += o.*field;
  return s;
}

}  // namespace

double TrafficCounts::sent_bytes() const { return total(ops, &OpCount::sent_bytes); }
double TrafficCounts::recv_bytes() const { return total(ops, &OpCount::recv_bytes); }
double TrafficCounts::seconds() const { return total(ops, &OpCount::seconds); }

TrafficCounts TrafficCounts::since(const TrafficCounts& earlier) const {
  TrafficCounts d;
  for (size_t i = 0; i < ops.size(); ++i) {
    d.ops[i].calls = ops[i].calls - earlier.ops[i].calls;
    d.ops[i].payload_bytes = ops[i].payload_bytes - earlier.ops[i].payload_bytes;
    d.ops[i].sent_bytes = ops[i].sent_bytes - earlier.ops[i].sent_bytes;
    d.ops[i].recv_bytes = ops[i].recv_bytes - earlier.ops[i].recv_bytes;
    d.ops[i].seconds = ops[i].seconds - earlier.ops[i].seconds;
  }
  return d;
}

WireBytes ring_allreduce_bytes(double payload, int ranks) {
  const double b = ranks > 1 ? 2.0 * (ranks - 1) / ranks * payload : 0.0;
  return {b, b};
}

WireBytes chain_broadcast_bytes(double payload, int rank, int root, int ranks) {
  if (ranks <= 1) return {};
  const int last = (root + ranks - 1) % ranks;  // the chain runs root, root+1, ..., root-1
  return {rank == last ? 0.0 : payload, rank == root ? 0.0 : payload};
}

WireBytes ring_allgather_bytes(double per_rank, int ranks) {
  const double b = ranks > 1 ? (ranks - 1) * per_rank : 0.0;
  return {b, b};
}

void Traffic::add(Op op, double payload, WireBytes wire, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  OpCount& c = counts_.ops[static_cast<size_t>(op)];
  c.calls += 1;
  c.payload_bytes += payload;
  c.sent_bytes += wire.sent;
  c.recv_bytes += wire.recv;
  c.seconds += seconds;
}

TrafficCounts Traffic::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

nlohmann::json to_json(const TrafficCounts& c) {
  nlohmann::json j = nlohmann::json::object();
  for (int i = 0; i < kOps; ++i) {
    const OpCount& o = c.ops[static_cast<size_t>(i)];
    if (o.calls == 0) continue;
    j[op_name(static_cast<Op>(i))] = {{"calls", o.calls},
                                      {"payload_bytes", o.payload_bytes},
                                      {"sent_bytes", o.sent_bytes},
                                      {"recv_bytes", o.recv_bytes},
                                      {"seconds", o.seconds}};
  }
  return j;
}

}  // namespace smoe::comm
