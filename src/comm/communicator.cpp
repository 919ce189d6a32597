#include "comm/communicator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace smoe::comm {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
    case DType::u8:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "float32";
    case DType::f64:
      return "float64";
    case DType::i32:
      return "int32";
    case DType::i64:
      return "int64";
    case DType::u8:
      return "uint8";
  }
  return "?";
}

void Communicator::broadcast_bytes(std::string& bytes, int root) {
  int64_t n = static_cast<int64_t>(bytes.size());
  broadcast(host_buffer(&n, 1), root);
  bytes.resize(static_cast<size_t>(n));
  if (n > 0) broadcast(host_buffer(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()), root);
}

std::vector<std::string> Communicator::allgather_bytes(std::string_view bytes) {
  std::vector<std::string> parts = gather_bytes(bytes, 0);
  std::string packed;
  if (is_root()) {
    for (const auto& p : parts) {
      int64_t n = static_cast<int64_t>(p.size());
      packed.append(reinterpret_cast<const char*>(&n), sizeof n);
      packed += p;
    }
  }
  broadcast_bytes(packed, 0);
  std::vector<std::string> out;
  size_t pos = 0;
  for (int r = 0; r < size(); ++r) {
    int64_t n;
    SMOE_ASSERT(pos + sizeof n <= packed.size(), "allgather_bytes framing");
    std::memcpy(&n, packed.data() + pos, sizeof n);
    pos += sizeof n;
    out.emplace_back(packed.substr(pos, static_cast<size_t>(n)));
    pos += static_cast<size_t>(n);
  }
  return out;
}

double Communicator::allreduce_sum(double v) {
  allreduce(host_buffer(&v, 1), ReduceOp::sum);
  return v;
}

int64_t Communicator::allreduce_sum(int64_t v) {
  allreduce(host_buffer(&v, 1), ReduceOp::sum);
  return v;
}

Message Communicator::recv_idle(int source, int tag) {
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    if (auto m = try_recv(source, tag)) return *m;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
}

double Communicator::allreduce_max(double v) {
  allreduce(host_buffer(&v, 1), ReduceOp::max);
  return v;
}

}  // namespace smoe::comm
