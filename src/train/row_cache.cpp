#include "train/row_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <torch/torch.h>

#include "comm/tensor_collectives.h"
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
    c->blocks_ = torch::empty({c->ranks_ * c->slots_ * batch, c->row_});
    comm.allgather(comm::buffer_of(block), comm::buffer_of(c->blocks_));
    return c;
  }

  // One file of every row in id order: rank 0 sizes it, each rank writes the
  // rows it computed at their offsets (disjoint ranges), then every rank
  // opens it for reading. One descriptor per rank whatever the rank count.
  fs::create_directories(fs::path(file).parent_path());
  c->file_ = file;
  const off_t row_bytes = static_cast<off_t>(c->row_) * static_cast<off_t>(sizeof(float));
  if (comm.rank() == 0) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(n) * row_bytes) != 0) {
      const std::string why = errno_message("cannot write " + file);
      if (fd >= 0) ::close(fd);
      throw Error(why);
    }
    ::close(fd);
  }
  comm.barrier();
  {
    const int fd = ::open(file.c_str(), O_WRONLY);
    if (fd < 0)
      throw Error(errno_message("cannot open " + file + " (is the run folder on a file system every rank sees?)"));
    try {
      each_batch([&](int64_t slot, const at::Tensor& rows) {
        write_at(fd, static_cast<const char*>(rows.data_ptr()), static_cast<size_t>(rows.nbytes()),
                 static_cast<off_t>(mine[static_cast<size_t>(slot)] * batch) * row_bytes, file);
      });
      if (keep_file && ::fsync(fd) != 0) throw Error(errno_message("cannot write " + file));
    } catch (...) {
      ::close(fd);
      throw;
    }
    if (::close(fd) != 0) throw Error(errno_message("cannot write " + file));
  }
  comm.barrier();  // every row is written
  if (keep_file && mode == RowCacheMode::memory) return open(file, n, c->shape_, RowCacheMode::memory);
  c->fd_ = ::open(file.c_str(), O_RDONLY);
  if (c->fd_ < 0) throw Error(errno_message("cannot open " + file));
  c->remove_ = !keep_file && comm.rank() == 0;
  comm.barrier();  // every rank holds it open before anyone may remove it
  return c;
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
    return blocks_.index_select(0, torch::tensor(where, torch::kLong)).view(shape);
  }
  at::Tensor out = torch::empty({n, row_});
  const size_t row_bytes = static_cast<size_t>(row_) * sizeof(float);
  char* dst = static_cast<char*>(out.data_ptr());
  for (size_t i = 0; i < ids.size(); ++i) {
    SMOE_ASSERT(ids[i] >= 0 && ids[i] < n_, "row cache: id {} outside [0, {})", ids[i], n_);
    read_at(fd_, dst + i * row_bytes, row_bytes, static_cast<off_t>(ids[i]) * static_cast<off_t>(row_bytes), file_);
  }
  return out.view(shape);
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
