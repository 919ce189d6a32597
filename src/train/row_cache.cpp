#include "train/row_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <torch/torch.h>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "comm/tensor_collectives.h"
#include "comm/thread_communicator.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/heartbeat.h"
#include "data/batch.h"
#include "data/sampler.h"

namespace smoe::train {
namespace {

namespace fs = std::filesystem;

void write_at(int fd, const char* p, size_t n, off_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, offset);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw Error(errno_message("cannot write " + path));
    p += w;
    n -= static_cast<size_t>(w);
    offset += w;
  }
}

void read_at(int fd, char* p, size_t n, off_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, offset);
    if (r < 0 && errno == EINTR) continue;
    SMOE_CHECK(r > 0, "{}: short read at offset {} ({})", path, offset, r < 0 ? std::strerror(errno) : "end of file");
    p += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t row = 1;
  for (int64_t d : shape) row *= d;
  return row;
}

// The collective writing of one file of n rows of `row` floats in id order:
// rank 0 creates it at its full size (as file.part when atomic), every rank
// writes its rows at their offsets (disjoint ranges), and finish() publishes
// it once every rank has written (fsync'ed, and renamed onto `file` by rank
// 0 when atomic, so a reader sees the old file or the whole new one). One
// descriptor per rank whatever the rank count.
class RowFileWriter {
 public:
  RowFileWriter(std::string file, int64_t n, int64_t row, comm::Communicator& comm, bool atomic)
      : file_(std::move(file)),
        path_(atomic ? file_ + ".part" : file_),
        comm_(comm),
        atomic_(atomic),
        row_bytes_(static_cast<off_t>(row) * static_cast<off_t>(sizeof(float))) {
    fs::create_directories(fs::path(file_).parent_path());
    if (comm.rank() == 0) {
      const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(n) * row_bytes_) != 0) {
        const std::string why = errno_message("cannot write " + file_);
        if (fd >= 0) ::close(fd);
        throw Error(why);
      }
      ::close(fd);
    }
    comm.barrier();
    fd_ = ::open(path_.c_str(), O_WRONLY);
    if (fd_ < 0)
      throw Error(errno_message("cannot open " + path_ + " (is the run folder on a file system every rank sees?)"));
  }
  ~RowFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    std::error_code ec;
    if (!finished_ && atomic_ && comm_.rank() == 0) fs::remove(path_, ec);  // a failed write leaves no .part
  }
  RowFileWriter(const RowFileWriter&) = delete;
  RowFileWriter& operator=(const RowFileWriter&) = delete;

  // Rows [m, row] (float, contiguous) of ids first, first + 1, ...
  void write(int64_t first, const at::Tensor& rows) {
    write_at(fd_, static_cast<const char*>(rows.data_ptr()), static_cast<size_t>(rows.nbytes()),
             static_cast<off_t>(first) * row_bytes_, file_);
  }

  void finish() {
    if (atomic_ && ::fsync(fd_) != 0) throw Error(errno_message("cannot write " + file_));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw Error(errno_message("cannot write " + file_));
    comm_.barrier();  // every row is written
    if (atomic_ && comm_.rank() == 0) {
      if (::rename(path_.c_str(), file_.c_str()) != 0) throw Error(errno_message("cannot write " + file_));
      fsync_dir(fs::path(file_).parent_path().string());
    }
    if (atomic_) comm_.barrier();  // every rank sees the file
    finished_ = true;
  }

 private:
  std::string file_, path_;
  comm::Communicator& comm_;
  bool atomic_;
  off_t row_bytes_;
  int fd_ = -1;
  bool finished_ = false;
};

}  // namespace

const char* mode_name(RowCacheMode m) { return m == RowCacheMode::memory ? "memory" : "disk"; }

int64_t RowCache::bytes_of(int64_t n, const std::vector<int64_t>& shape) {
  return n * numel_of(shape) * static_cast<int64_t>(sizeof(float));
}

std::unique_ptr<RowCache> RowCache::from_rows(const at::Tensor& rows) {
  SMOE_CHECK(rows.dim() >= 1, "row cache: rows need at least one dimension");
  std::unique_ptr<RowCache> c(new RowCache());
  c->shape_ = rows.sizes().slice(1).vec();
  c->row_ = numel_of(c->shape_);
  c->n_ = rows.size(0);
  c->batch_ = std::max<int64_t>(c->n_, 1);
  c->slots_ = 1;
  c->blocks_ = rows.reshape({c->n_, c->row_}).to(torch::kFloat).cpu().contiguous();
  return c;
}

std::unique_ptr<RowCache> RowCache::build(int64_t n, std::vector<int64_t> shape, int64_t batch,
                                          comm::Communicator& comm, RowCacheMode mode, const std::string& file,
                                          const Compute& compute, bool keep_file) {
  torch::NoGradGuard no_grad;
  std::unique_ptr<RowCache> c(new RowCache());
  c->mode_ = mode;
  c->shape_ = std::move(shape);
  c->row_ = numel_of(c->shape_);
  c->n_ = n;
  c->batch_ = batch;
  c->ranks_ = comm.size();
  const int64_t batches = (n + batch - 1) / batch;
  c->slots_ = (batches + c->ranks_ - 1) / c->ranks_;
  const std::vector<int64_t> mine = data::round_robin(batches, comm.rank(), comm.size());

  // Rank r computes batches r, r + P, ...; `keep` gets slot j's rows.
  auto each_batch = [&](const std::function<void(int64_t slot, const at::Tensor& rows)>& keep) {
    for (size_t slot = 0; slot < mine.size(); ++slot) {
      heartbeat::beat("per-sample rows batch");
      const int64_t b = mine[slot];
      std::vector<int64_t> ids;
      for (int64_t i = b * batch; i < std::min(n, (b + 1) * batch); ++i) ids.push_back(i);
      at::Tensor rows = compute(ids).reshape({static_cast<int64_t>(ids.size()), c->row_});
      keep(static_cast<int64_t>(slot), rows.to(torch::kFloat).cpu().contiguous());
    }
  };

  if (mode == RowCacheMode::memory && !keep_file) {
    // Blocks padded to the same number of slots so that one allgather moves
    // them all; rows are then found through locate() (no reordered copy).
    at::Tensor block = torch::zeros({c->slots_ * batch, c->row_});
    each_batch([&](int64_t slot, const at::Tensor& rows) { block.narrow(0, slot * batch, rows.size(0)).copy_(rows); });
    if (c->ranks_ == 1) {
      c->blocks_ = block;  // no second copy
      return c;
    }
    c->blocks_ = torch::empty({c->ranks_ * c->slots_ * batch, c->row_});
    comm.allgather(comm::buffer_of(block), comm::buffer_of(c->blocks_));
    return c;
  }

  // One file of every row in id order, each rank writing the rows it computed.
  {
    RowFileWriter out(file, n, c->row_, comm, /*atomic=*/keep_file);
    each_batch([&](int64_t slot, const at::Tensor& rows) { out.write(mine[static_cast<size_t>(slot)] * batch, rows); });
    out.finish();
  }
  if (keep_file) return open(file, n, c->shape_, mode);
  c->file_ = file;
  c->fd_ = ::open(file.c_str(), O_RDONLY);
  if (c->fd_ < 0) throw Error(errno_message("cannot open " + file));
  c->remove_ = comm.rank() == 0;
  comm.barrier();  // every rank holds it open before anyone may remove it
  return c;
}

std::unique_ptr<RowCache> RowCache::build_local(int64_t n, std::vector<int64_t> shape, int64_t batch, RowCacheMode mode,
                                                const std::string& file, const Compute& compute) {
  comm::ThreadGroup self(1);
  return build(n, std::move(shape), batch, *self.communicator(0), mode, file, compute);
}

std::unique_ptr<RowCache> RowCache::write(const std::string& file, int64_t n, std::vector<int64_t> shape,
                                          const at::Tensor& ids, const at::Tensor& rows, comm::Communicator& comm,
                                          RowCacheMode mode) {
  const int64_t row = numel_of(shape);
  SMOE_CHECK(ids.dim() == 1 && rows.size(0) == ids.size(0), "row cache: {} ids for {} rows", ids.numel(), rows.size(0));
  const at::Tensor flat = rows.reshape({rows.size(0), row}).to(torch::kFloat).cpu().contiguous();
  const at::Tensor id = ids.to(torch::kLong).cpu().contiguous();
  const int64_t* p = id.data_ptr<int64_t>();
  for (int64_t i = 0; i < id.numel(); ++i)
    SMOE_CHECK(p[i] >= 0 && p[i] < n, "row cache: id {} outside [0, {}) ({})", p[i], n, file);
  {
    RowFileWriter out(file, n, row, comm, /*atomic=*/true);
    // Runs of consecutive ids go in one write each.
    for (int64_t i = 0, m = id.numel(); i < m;) {
      int64_t j = i + 1;
      while (j < m && p[j] == p[j - 1] + 1) ++j;
      out.write(p[i], flat.narrow(0, i, j - i));
      i = j;
    }
    out.finish();
  }
  return open(file, n, std::move(shape), mode);
}

std::unique_ptr<RowCache> RowCache::open(const std::string& file, int64_t n, std::vector<int64_t> shape,
                                         RowCacheMode mode) {
  std::unique_ptr<RowCache> c(new RowCache());
  c->mode_ = mode;
  c->shape_ = std::move(shape);
  c->row_ = numel_of(c->shape_);
  c->n_ = n;
  c->batch_ = std::max<int64_t>(n, 1);
  c->slots_ = 1;
  c->file_ = file;
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  SMOE_CHECK(!ec, "{}: cannot read ({})", file, ec.message());
  SMOE_CHECK(static_cast<int64_t>(size) == c->bytes(), "{}: holds {} bytes, expected {} ({} rows of {} floats)", file,
             size, c->bytes(), n, c->row_);
  c->fd_ = ::open(file.c_str(), O_RDONLY);
  if (c->fd_ < 0) throw Error(errno_message("cannot open " + file));
  if (mode == RowCacheMode::memory) {
    c->blocks_ = torch::empty({n, c->row_});
    read_at(c->fd_, static_cast<char*>(c->blocks_.data_ptr()), static_cast<size_t>(c->bytes()), 0, file);
    ::close(c->fd_);
    c->fd_ = -1;
  }
  return c;
}

RowCache::~RowCache() {
  if (fd_ >= 0) ::close(fd_);
  if (remove_) {
    std::error_code ec;
    fs::remove(file_, ec);  // ranks still reading keep their open descriptor
  }
}

void RowCache::locate(int64_t id, int64_t& owner, int64_t& slot_row) const {
  SMOE_ASSERT(id >= 0 && id < n_, "row cache: id {} outside [0, {})", id, n_);
  const int64_t b = id / batch_;
  owner = b % ranks_;
  slot_row = (b / ranks_) * batch_ + id % batch_;
}

bool RowCache::keep_on(const c10::Device& device) {
  if (mode_ != RowCacheMode::memory) return false;
  blocks_ = blocks_.to(device);
  return true;
}

at::Tensor RowCache::rows(const std::vector<int64_t>& ids) const {
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), shape_.begin(), shape_.end());
  if (mode_ == RowCacheMode::memory) {
    std::vector<int64_t> where(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      int64_t owner = 0, slot_row = 0;
      locate(ids[i], owner, slot_row);
      where[i] = owner * slots_ * batch_ + slot_row;
    }
    return blocks_.index_select(0, torch::tensor(where, torch::kLong).to(blocks_.device())).view(shape);
  }
  at::Tensor out = torch::empty({n, row_});
  const size_t row_bytes = static_cast<size_t>(row_) * sizeof(float);
  char* dst = static_cast<char*>(out.data_ptr());
  // Runs of consecutive ids in one read each.
  for (size_t i = 0; i < ids.size();) {
    SMOE_ASSERT(ids[i] >= 0 && ids[i] < n_, "row cache: id {} outside [0, {})", ids[i], n_);
    size_t j = i + 1;
    while (j < ids.size() && ids[j] == ids[j - 1] + 1 && ids[j] < n_) ++j;
    read_at(fd_, dst + i * row_bytes, (j - i) * row_bytes, static_cast<off_t>(ids[i]) * static_cast<off_t>(row_bytes),
            file_);
    i = j;
  }
  return out.view(shape);
}

void RowCache::for_each_batch(int64_t batch, const std::function<void(int64_t start, const at::Tensor&)>& f) const {
  for (int64_t start = 0; start < n_; start += batch) {
    std::vector<int64_t> ids(static_cast<size_t>(std::min(batch, n_ - start)));
    std::iota(ids.begin(), ids.end(), start);
    f(start, rows(ids).reshape({static_cast<int64_t>(ids.size()), row_}));
  }
}

at::Tensor RowCache::column(int64_t j, int64_t batch) const {
  SMOE_ASSERT(j >= 0 && j < row_, "row cache: column {} of rows of {}", j, row_);
  at::Tensor out = torch::empty({n_});
  for_each_batch(batch,
                 [&](int64_t start, const at::Tensor& r) { out.narrow(0, start, r.size(0)).copy_(r.select(1, j)); });
  return out;
}

at::Tensor RowCache::sum_rows(int64_t batch) const {
  at::Tensor sum = torch::zeros({row_}, torch::kDouble);
  for_each_batch(batch, [&](int64_t, const at::Tensor& r) { sum += r.to(torch::kDouble).sum(0); });
  return sum;
}

int64_t trunk_cache_bytes(const models::Backbone& base, int64_t samples, int64_t branch_after) {
  const models::Shape s = base->input_shape_of(branch_after);
  return RowCache::bytes_of(samples, {s[0], s[1], s[2]});
}

std::unique_ptr<RowCache> build_trunk_cache(models::Backbone& base, const data::Dataset& ds, int64_t branch_after,
                                            int64_t batch, comm::Communicator& comm, RowCacheMode mode,
                                            const std::string& folder) {
  base->eval();
  const models::Shape s = base->input_shape_of(branch_after);
  const auto device = base->parameters().front().device();
  return RowCache::build(ds.size(), {s[0], s[1], s[2]}, batch, comm, mode,
                         (fs::path(folder) / "trunk-features.f32").string(), [&](const std::vector<int64_t>& ids) {
                           data::Batch x = data::make_batch(ds, ids, data::Transform{});
                           return base->blocks(x.images.to(device), 0, branch_after);
                         });
}

}  // namespace smoe::train
