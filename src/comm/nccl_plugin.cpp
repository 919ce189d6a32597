// libsmoe_nccl.so: the NCCL communicator (see nccl.h). Handles CUDA buffers
// only; control messages, barriers and byte gathers are delegated to the
// bootstrap (MPI) communicator. Collectives run on the stream the buffer
// names (libtorch's current stream of the tensor's device, so that they
// follow the kernels that produced the data), and are
// waited for before returning — by polling that stream and NCCL's
// asynchronous error state, never by a blocking synchronisation, so that an
// NCCL failure or a dead peer ends in an error (and ncclCommAbort) within
// SMOE_NCCL_TIMEOUT_S seconds (default 600) instead of a hang. The
// communicator's creation is bounded the same way (non-blocking
// ncclCommInitRankConfig, NCCL 2.14 and later): a rank that never joins
// ends the job instead of hanging it. Every CUDA and
// NCCL return code is checked and reported with rank, file and line.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "comm/nccl.h"
#include "core/error.h"

namespace smoe::comm {
namespace {

thread_local int g_rank = -1;

}  // namespace
}  // namespace smoe::comm

#define SMOE_CUDA_CHECK(call)                                                                                  \
  do {                                                                                                         \
    cudaError_t smoe_rc_ = (call);                                                                             \
    if (smoe_rc_ != cudaSuccess)                                                                               \
      ::smoe::fail("CUDA error in {} on rank {} ({}:{}): {}", #call, ::smoe::comm::g_rank, __FILE__, __LINE__, \
                   cudaGetErrorString(smoe_rc_));                                                              \
  } while (0)

#define SMOE_NCCL_CHECK(call)                                                                                  \
  do {                                                                                                         \
    ncclResult_t smoe_rc_ = (call);                                                                            \
    if (smoe_rc_ != ncclSuccess)                                                                               \
      ::smoe::fail("NCCL error in {} on rank {} ({}:{}): {}", #call, ::smoe::comm::g_rank, __FILE__, __LINE__, \
                   ncclGetErrorString(smoe_rc_));                                                              \
  } while (0)

namespace smoe::comm {
namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    case DType::u8:
      return ncclUint8;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::max:
      return ncclMax;
    case ReduceOp::min:
      return ncclMin;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, int device) : boot_(bootstrap), device_(device) {
    g_rank = bootstrap.rank();
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    SMOE_CHECK(rc == cudaSuccess && count > 0, "NCCL needs a CUDA device, but rank {} sees none ({})", bootstrap.rank(),
               rc == cudaSuccess ? "cudaGetDeviceCount returned 0" : cudaGetErrorString(rc));
    SMOE_CHECK(device >= 0 && device < count, "rank {}: CUDA device {} does not exist ({} visible)", bootstrap.rank(),
               device, count);
    SMOE_CUDA_CHECK(cudaSetDevice(device));
    ncclUniqueId id;
    if (bootstrap.rank() == 0) SMOE_NCCL_CHECK(ncclGetUniqueId(&id));
    bootstrap.broadcast(Buffer{&id, sizeof id, DType::u8, Device{}}, 0);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t init = ncclCommInitRankConfig(&comm_, bootstrap.size(), id, bootstrap.rank(), &config);
    if (init != ncclInProgress) SMOE_NCCL_CHECK(init);
    const auto start = std::chrono::steady_clock::now();
    for (ncclResult_t state = ncclInProgress; state == ncclInProgress;) {
      SMOE_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
      if (state != ncclSuccess && state != ncclInProgress) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail("NCCL communicator creation failed on rank {}: {}", bootstrap.rank(), ncclGetErrorString(state));
      }
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s_) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail(
            "NCCL communicator creation on rank {} did not complete in {:.0f} s (a rank did not join; "
            "SMOE_NCCL_TIMEOUT_S)",
            bootstrap.rank(), timeout_s_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
#else
    SMOE_NCCL_CHECK(ncclCommInitRank(&comm_, bootstrap.size(), id, bootstrap.rank()));
#endif
  }
  ~NcclCommunicator() override {
    if (!comm_) return;
    const ncclResult_t rc = ncclCommDestroy(comm_);
    if (rc != ncclSuccess)  // a destructor cannot throw: say it, the job is ending anyway
      std::fprintf(stderr, "smoe: warning: ncclCommDestroy failed on rank %d: %s\n", boot_.rank(),
                   ncclGetErrorString(rc));
  }

  int rank() const override { return boot_.rank(); }
  int size() const override { return boot_.size(); }
  std::string name() const override { return "nccl"; }
  void barrier() override { boot_.barrier(); }

  void broadcast(Buffer buf, int root) override {
    check_device(buf, "broadcast");
    SMOE_NCCL_CHECK(ncclBroadcast(buf.data, buf.data, buf.count, nccl_type(buf.dtype), root, comm_, stream(buf)));
    wait("broadcast", stream(buf));
  }
  void allreduce(Buffer buf, ReduceOp op) override {
    check_device(buf, "allreduce");
    SMOE_NCCL_CHECK(
        ncclAllReduce(buf.data, buf.data, buf.count, nccl_type(buf.dtype), nccl_op(op), comm_, stream(buf)));
    wait("allreduce", stream(buf));
  }
  void allgather(Buffer send, Buffer recv) override {
    check_device(send, "allgather");
    check_device(recv, "allgather");
    SMOE_CHECK(recv.count == send.count * static_cast<size_t>(size()), "allgather: receive buffer size");
    SMOE_NCCL_CHECK(ncclAllGather(send.data, recv.data, send.count, nccl_type(send.dtype), comm_, stream(send)));
    wait("allgather", stream(send));
  }
  std::vector<std::string> gather_bytes(std::string_view bytes, int root) override {
    return boot_.gather_bytes(bytes, root);
  }
  void send(int dest, int tag, std::string_view payload) override { boot_.send(dest, tag, payload); }
  Message recv(int source, int tag) override { return boot_.recv(source, tag); }
  std::optional<Message> try_recv(int source, int tag) override { return boot_.try_recv(source, tag); }
  [[noreturn]] void abort(int code, const std::string& why) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    boot_.abort(code, why);
    std::abort();  // boot_.abort never returns
  }

 private:
  // Waits for the collective just enqueued: polls the stream and NCCL's
  // asynchronous error; on an error or past the timeout, aborts the NCCL
  // communicator (which unblocks its kernels) and throws.
  static cudaStream_t stream(const Buffer& b) { return static_cast<cudaStream_t>(b.device.stream); }

  void wait(const char* op, cudaStream_t stream) {
    const auto start = std::chrono::steady_clock::now();
    auto pause = std::chrono::microseconds(20);
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) SMOE_CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      SMOE_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
      if (async != ncclSuccess && async != ncclInProgress) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail("NCCL {} failed on rank {}: {}", op, boot_.rank(), ncclGetErrorString(async));
      }
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_s_) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail("NCCL {} on rank {} did not complete in {:.0f} s (a peer died or stalled; SMOE_NCCL_TIMEOUT_S)", op,
             boot_.rank(), timeout_s_);
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(2000));
    }
  }
  static double timeout_from_env() {
    const char* t = std::getenv("SMOE_NCCL_TIMEOUT_S");
    return t && std::atof(t) > 0 ? std::atof(t) : 600.0;
  }

  void check_device(const Buffer& b, const char* op) const {
    SMOE_CHECK(b.device.cuda, "{}: the NCCL communicator takes CUDA buffers; host buffers go through MPI", op);
    SMOE_CHECK(b.device.index == device_, "{}: buffer on CUDA device {} but this rank uses device {}", op,
               b.device.index, device_);
  }

  Communicator& boot_;
  int device_;
  ncclComm_t comm_ = nullptr;
  double timeout_s_ = timeout_from_env();
};

}  // namespace
}  // namespace smoe::comm

extern "C" smoe::comm::Communicator* smoe_nccl_create(smoe::comm::Communicator* bootstrap, int device, char* error,
                                                      size_t error_size) {
  try {
    return new smoe::comm::NcclCommunicator(*bootstrap, device);
  } catch (const std::exception& e) {
    std::snprintf(error, error_size, "%s", e.what());
    return nullptr;
  }
}

// NCCL's version and the CUDA runtime's, the driver's (what the installed
// driver supports, "none" without one) and the GPUs' names, as JSON.
extern "C" void smoe_nccl_versions(char* json, size_t json_size) {
  int nccl = 0, runtime = 0, driver = 0, count = 0;
  ncclGetVersion(&nccl);
  cudaRuntimeGetVersion(&runtime);
  const bool has_driver = cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0;
  std::string gpus;
  if (has_driver && cudaGetDeviceCount(&count) == cudaSuccess)
    for (int d = 0; d < count; ++d) {
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) continue;
      std::string name = prop.name;
      for (auto& c : name)
        if (c == '"' || c == '\\') c = ' ';
      gpus += (gpus.empty() ? "\"" : ", \"") + name + "\"";
    }
  cudaGetLastError();  // a failed query leaves nothing behind for the next call
  // NCCL encodes 2.x.y as x*100 + y + 20000 (since 2.9) and CUDA x.y as x*1000 + y*10.
  const int nccl_major = nccl >= 10000 ? nccl / 10000 : nccl / 1000;
  const int nccl_minor = nccl >= 10000 ? (nccl % 10000) / 100 : (nccl % 1000) / 100;
  const int nccl_patch = nccl % 100;
  const std::string driver_text =
      has_driver ? std::to_string(driver / 1000) + "." + std::to_string((driver % 1000) / 10) : "none";
  std::snprintf(
      json, json_size, "{\"nccl\": \"%d.%d.%d\", \"cuda_runtime\": \"%d.%d\", \"cuda_driver\": \"%s\", \"gpus\": [%s]}",
      nccl_major, nccl_minor, nccl_patch, runtime / 1000, (runtime % 1000) / 10, driver_text.c_str(), gpus.c_str());
}
