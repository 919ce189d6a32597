#include "comm/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <cstdio>

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace smoe::comm {
namespace {

int world_rank_for_errors() {
  int init = 0, rank = -1;
  MPI_Initialized(&init);
  if (init) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

[[noreturn]] void mpi_fail(int rc, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  fail("MPI error in {} on rank {} ({}:{}): {}", call, world_rank_for_errors(), file, line,
       std::string(text, static_cast<size_t>(len)));
}

}  // namespace
}  // namespace smoe::comm

#define SMOE_MPI_CHECK(call)                                                                          \
  do {                                                                                                \
    int smoe_mpi_rc_ = (call);                                                                        \
    if (smoe_mpi_rc_ != MPI_SUCCESS) ::smoe::comm::mpi_fail(smoe_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

namespace smoe::comm {
namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    case DType::u8:
      return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return MPI_SUM;
    case ReduceOp::max:
      return MPI_MAX;
    case ReduceOp::min:
      return MPI_MIN;
  }
  return MPI_SUM;
}

// MPI counts are ints: large buffers go in pieces of at most 1 GiB.
constexpr size_t kMaxPiece = size_t{1} << 30;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// Destructors cannot throw: a failed MPI call there is reported on stderr.
void warn_on_error(int rc, const char* call, int rank) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  std::fprintf(stderr, "smoe: warning: %s failed on rank %d: %.*s\n", call, rank, len, text);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm parent) {
    SMOE_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
    SMOE_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    SMOE_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    SMOE_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) warn_on_error(MPI_Comm_free(&comm_), "MPI_Comm_free", rank_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void barrier() override { SMOE_MPI_CHECK(MPI_Barrier(comm_)); }

  void broadcast(Buffer buf, int root) override {
    check_host(buf, "broadcast");
    for_pieces(buf, [&](char* p, int n) { SMOE_MPI_CHECK(MPI_Bcast(p, n, mpi_type(buf.dtype), root, comm_)); });
  }

  void allreduce(Buffer buf, ReduceOp op) override {
    check_host(buf, "allreduce");
    for_pieces(buf, [&](char* p, int n) {
      SMOE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, p, n, mpi_type(buf.dtype), mpi_op(op), comm_));
    });
  }

  void allgather(Buffer send, Buffer recv) override {
    check_host(send, "allgather");
    check_host(recv, "allgather");
    SMOE_CHECK(recv.count == send.count * static_cast<size_t>(size_),
               "allgather: receive buffer holds {} elements, expected {}", recv.count, send.count * size_);
    if (send.bytes() > kMaxPiece) {
      // MPI counts are ints: large blocks go as one (chunked) broadcast per rank.
      char* base = static_cast<char*>(recv.data);
      std::memcpy(base + static_cast<size_t>(rank_) * send.bytes(), send.data, send.bytes());
      for (int r = 0; r < size_; ++r)
        broadcast(Buffer{base + static_cast<size_t>(r) * send.bytes(), send.count, send.dtype, Device{}}, r);
      return;
    }
    SMOE_MPI_CHECK(MPI_Allgather(send.data, static_cast<int>(send.count), mpi_type(send.dtype), recv.data,
                                 static_cast<int>(send.count), mpi_type(recv.dtype), comm_));
  }

  // MPI counts are ints: every rank's bytes travel in rounds of at most
  // kMaxPiece / size bytes per rank, so that no call exceeds 2 GiB whatever
  // the total (the root must still have room for the result).
  std::vector<std::string> gather_bytes(std::string_view bytes, int root) override {
    std::vector<int64_t> sizes(static_cast<size_t>(size_));
    const int64_t mine = static_cast<int64_t>(bytes.size());
    SMOE_MPI_CHECK(MPI_Allgather(&mine, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, comm_));
    const int64_t piece = std::max<int64_t>(1, static_cast<int64_t>(kMaxPiece) / size_);
    int64_t rounds = 0;
    for (int64_t n : sizes) rounds = std::max(rounds, (n + piece - 1) / piece);
    std::vector<std::string> out(rank_ == root ? static_cast<size_t>(size_) : 0);
    for (size_t r = 0; r < out.size(); ++r) out[r].resize(static_cast<size_t>(sizes[r]));
    std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
    std::string buffer;
    for (int64_t round = 0; round < rounds; ++round) {
      int total = 0;
      for (int r = 0; r < size_; ++r) {
        const int64_t from = round * piece;
        counts[r] = static_cast<int>(std::clamp<int64_t>(sizes[r] - from, 0, piece));
        displs[r] = total;
        total += counts[r];
      }
      if (rank_ == root) buffer.resize(static_cast<size_t>(total));
      const int64_t from = std::min(mine, round * piece);
      SMOE_MPI_CHECK(MPI_Gatherv(bytes.data() + from, counts[rank_], MPI_BYTE, buffer.data(), counts.data(),
                                 displs.data(), MPI_BYTE, root, comm_));
      if (rank_ == root)
        for (int r = 0; r < size_; ++r)
          std::memcpy(out[r].data() + round * piece, buffer.data() + displs[r], static_cast<size_t>(counts[r]));
    }
    return out;
  }

  void send(int dest, int tag, std::string_view payload) override {
    SMOE_CHECK(payload.size() <= kMaxPiece, "send: message of {} bytes is too large", payload.size());
    SMOE_MPI_CHECK(MPI_Send(payload.data(), static_cast<int>(payload.size()), MPI_BYTE, dest, tag, comm_));
  }

  Message recv(int source, int tag) override {
    // Matched probe: safe when several threads receive concurrently.
    MPI_Message handle;
    MPI_Status status;
    SMOE_MPI_CHECK(MPI_Mprobe(source == kAnySource ? MPI_ANY_SOURCE : source, tag, comm_, &handle, &status));
    return receive_matched(handle, status);
  }

  std::optional<Message> try_recv(int source, int tag) override {
    MPI_Message handle;
    MPI_Status status;
    int found = 0;
    SMOE_MPI_CHECK(MPI_Improbe(source == kAnySource ? MPI_ANY_SOURCE : source, tag, comm_, &found, &handle, &status));
    if (!found) return std::nullopt;
    return receive_matched(handle, status);
  }

  [[noreturn]] void abort(int code, const std::string& why) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  // Receives the message a matched probe found.
  static Message receive_matched(MPI_Message& handle, const MPI_Status& status) {
    int n = 0;
    SMOE_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &n));
    Message m;
    m.source = status.MPI_SOURCE;
    m.tag = status.MPI_TAG;
    m.payload.resize(static_cast<size_t>(n));
    SMOE_MPI_CHECK(MPI_Mrecv(m.payload.data(), n, MPI_BYTE, &handle, MPI_STATUS_IGNORE));
    return m;
  }

  static void check_host(const Buffer& b, const char* op) {
    SMOE_CHECK(!b.device.cuda, "{}: CUDA buffers go through the NCCL communicator, not MPI", op);
  }
  template <typename Fn>
  static void for_pieces(const Buffer& buf, Fn&& fn) {
    size_t elem = dtype_size(buf.dtype);
    size_t per = kMaxPiece / elem;
    char* p = static_cast<char*>(buf.data);
    for (size_t done = 0; done < buf.count; done += per) {
      size_t n = std::min(per, buf.count - done);
      fn(p + done * elem, static_cast<int>(n));
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int init = 0;
  SMOE_MPI_CHECK(MPI_Initialized(&init));
  if (!init) {
    int provided = 0;
    SMOE_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    owns_ = true;
    SMOE_CHECK(provided >= MPI_THREAD_MULTIPLE, "this MPI provides thread level {} but smoe needs MPI_THREAD_MULTIPLE",
               provided);
  }
  SMOE_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_Comm node;
  int world_rank = 0;
  SMOE_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  SMOE_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node));
  int node_rank = 0, node_size = 1;
  SMOE_MPI_CHECK(MPI_Comm_rank(node, &node_rank));
  SMOE_MPI_CHECK(MPI_Comm_size(node, &node_size));
  SMOE_MPI_CHECK(MPI_Comm_free(&node));
  // The node's ranks as MPI itself groups them (right under any launcher and
  // any MPI; launcher variables are not consulted).
  local_rank_ = node_rank;
  local_size_ = node_size;
  // Under srun, a world smaller than the step's tasks means each task
  // started its own MPI world (an srun --mpi plugin MPI does not speak).
  int world_size = 1;
  SMOE_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
  const int step_tasks = env_int("SLURM_STEP_NUM_TASKS", 0);
  SMOE_CHECK(step_tasks <= 0 || step_tasks == world_size,
             "srun started {} tasks but MPI sees a world of {} rank{}: each task is its own job; launch with "
             "srun --mpi=pmix (Debian's OpenMPI) or mpirun",
             step_tasks, world_size, world_size == 1 ? "" : "s");
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(text, &len) != MPI_SUCCESS) return "unknown";
  std::string s(text, static_cast<size_t>(len));
  const size_t end = s.find_first_of(",\n");  // "Open MPI v4.1.4, package: ..." -> "Open MPI v4.1.4"
  return s.substr(0, end);
}

MpiRuntime::~MpiRuntime() {
  if (owns_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      int rank = -1;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      warn_on_error(MPI_Finalize(), "MPI_Finalize", rank);
    }
  }
}

std::unique_ptr<Communicator> MpiRuntime::world() { return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD); }

std::unique_ptr<Communicator> MpiRuntime::split_world(int color) {
  int rank = 0;
  SMOE_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_Comm part = MPI_COMM_NULL;
  SMOE_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, color < 0 ? MPI_UNDEFINED : color, rank, &part));
  if (part == MPI_COMM_NULL) return nullptr;
  auto c = std::make_unique<MpiCommunicator>(part);  // a duplicate, with errors returned
  SMOE_MPI_CHECK(MPI_Comm_free(&part));
  return c;
}

}  // namespace smoe::comm
