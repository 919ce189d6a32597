// Everything that crosses ranks goes through this interface: rank and size,
// barrier, broadcast, allreduce, allgather, a variable-size gather, and
// point-to-point control messages. Implementations: MPI (mpi_communicator.h),
// NCCL for CUDA buffers (nccl.h, a run-time plugin), and ranks-as-threads for
// unit tests (thread_communicator.h). A DeviceRouter (router.h) binds one host
// and one device communicator so that callers never choose by hand.
//
// The interface is free of libtorch: tensors cross it as Buffers
// (tensor_collectives.h adapts at::Tensor). Collectives are blocking and must
// be called by every rank in the same order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace smoe::comm {

enum class DType { f32, f64, i32, i64, u8 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);

enum class ReduceOp { sum, max, min };

struct Device {
  bool cuda = false;
  int index = -1;          // CUDA device ordinal when cuda
  void* stream = nullptr;  // CUDA: the stream that produced the data (a cudaStream_t; null: the legacy default)
};

// A contiguous array of `count` elements of `dtype` on `device`.
struct Buffer {
  void* data = nullptr;
  size_t count = 0;
  DType dtype = DType::u8;
  Device device{};
  size_t bytes() const { return count * dtype_size(dtype); }
};

template <typename T>
DType dtype_of();
template <>
inline DType dtype_of<float>() {
  return DType::f32;
}
template <>
inline DType dtype_of<double>() {
  return DType::f64;
}
template <>
inline DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
inline DType dtype_of<int64_t>() {
  return DType::i64;
}
template <>
inline DType dtype_of<uint8_t>() {
  return DType::u8;
}

template <typename T>
Buffer host_buffer(T* data, size_t count) {
  return Buffer{data, count, dtype_of<T>(), Device{}};
}
template <typename T>
Buffer host_buffer(std::vector<T>& v) {
  return host_buffer(v.data(), v.size());
}

// A control message between ranks (payloads are small JSON documents).
struct Message {
  int source = -1;
  int tag = 0;
  std::string payload;
};

constexpr int kAnySource = -1;

class Traffic;

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "nccl", "threads", ...
  virtual std::string name() const = 0;

  // Whether collectives take CUDA buffers as they are (NCCL); if not, the
  // tensor adapters (tensor_collectives.h) stage device tensors through host
  // copies.
  virtual bool takes_device_buffers() const { return false; }

  virtual void barrier() = 0;
  virtual void broadcast(Buffer buf, int root) = 0;
  virtual void allreduce(Buffer buf, ReduceOp op) = 0;
  // `recv` holds size() * send.count elements; rank r's block at offset r * send.count.
  virtual void allgather(Buffer send, Buffer recv) = 0;
  // Variable-size gather of bytes: root receives size() strings, others none.
  virtual std::vector<std::string> gather_bytes(std::string_view bytes, int root) = 0;

  // Point-to-point control messages; recv blocks until a message with `tag`
  // arrives from `source` (or any rank with kAnySource).
  virtual void send(int dest, int tag, std::string_view payload) = 0;
  virtual Message recv(int source, int tag) = 0;
  // Non-blocking: a matching message if one has arrived. For loops that must
  // not spin on a core (MPI's blocking receive busy-polls).
  virtual std::optional<Message> try_recv(int source, int tag) = 0;

  // What this communicator has moved so far, where it counts (DeviceRouter
  // does: comm/traffic.h); null where it does not.
  virtual const Traffic* traffic() const { return nullptr; }

  // Ends every rank of the job (MPI_Abort for MPI). Never returns.
  [[noreturn]] virtual void abort(int code, const std::string& why) = 0;

  // Helpers built on the primitives above.
  bool is_root() const { return rank() == 0; }
  void broadcast_bytes(std::string& bytes, int root);
  std::vector<std::string> allgather_bytes(std::string_view bytes);
  double allreduce_sum(double v);
  int64_t allreduce_sum(int64_t v);
  double allreduce_max(double v);
  // recv without taking a core: polls try_recv with a growing sleep (0.2 ms
  // up to 20 ms). MPI's blocking receive busy-polls, which would steal the
  // core of a rank training on the same node; for waits that may be long.
  Message recv_idle(int source, int tag);
};

}  // namespace smoe::comm
