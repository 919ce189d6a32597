#include "train/trunk_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <filesystem>
#include <torch/torch.h>

#include "comm/tensor_collectives.h"
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

void read_at(int fd, char* p, size_t n, off_t offset) {
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, offset);
    if (r < 0 && errno == EINTR) continue;
    SMOE_CHECK(r > 0, "trunk cache: short read at offset {} ({})", offset, r < 0 ? std::strerror(errno) : "end of file");
    p += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
}

}  // namespace

const char* mode_name(TrunkCacheMode m) { return m == TrunkCacheMode::memory ? "memory" : "disk"; }

int64_t TrunkCache::bytes_of(const models::Backbone& base, int64_t samples, int64_t branch_after) {
  const models::Shape s = base->input_shape_of(branch_after);
  return samples * s[0] * s[1] * s[2] * static_cast<int64_t>(sizeof(float));
}

std::unique_ptr<TrunkCache> TrunkCache::from_rows(const at::Tensor& rows) {
  SMOE_CHECK(rows.dim() == 4, "trunk cache: rows must be [n, C, H, W], got {} dimensions", rows.dim());
  std::unique_ptr<TrunkCache> c(new TrunkCache());
  c->shape_ = {rows.size(1), rows.size(2), rows.size(3)};
  c->row_ = rows.size(1) * rows.size(2) * rows.size(3);
  c->n_ = rows.size(0);
  c->batch_ = std::max<int64_t>(c->n_, 1);
  c->ranks_ = 1;
  c->slots_ = 1;
  c->blocks_ = rows.reshape({c->n_, c->row_}).cpu().contiguous();
  return c;
}

std::unique_ptr<TrunkCache> TrunkCache::build(models::Backbone& base, const data::Dataset& ds, int64_t branch_after,
                                              int64_t batch, comm::Communicator& comm, TrunkCacheMode mode,
                                              const std::string& folder) {
  torch::NoGradGuard no_grad;
  base->eval();
  std::unique_ptr<TrunkCache> c(new TrunkCache());
  const models::Shape s = base->input_shape_of(branch_after);
  c->mode_ = mode;
  c->shape_ = {s[0], s[1], s[2]};
  c->row_ = s[0] * s[1] * s[2];
  c->n_ = ds.size();
  c->batch_ = batch;
  c->ranks_ = comm.size();
  const int64_t batches = (c->n_ + batch - 1) / batch;
  c->slots_ = (batches + c->ranks_ - 1) / c->ranks_;
  const auto device = base->parameters().front().device();

  // Rank r computes batches r, r + P, ... into slot j of its block.
  auto compute = [&](const std::function<void(int64_t slot, const at::Tensor& rows)>& keep) {
    int64_t slot = 0;
    for (int64_t b : data::round_robin(batches, comm.rank(), comm.size())) {
      heartbeat::beat("trunk features batch");
      std::vector<int64_t> ids;
      for (int64_t i = b * batch; i < std::min(c->n_, (b + 1) * batch); ++i) ids.push_back(i);
      data::Batch x = data::make_batch(ds, ids, data::Transform{});
      at::Tensor f = base->blocks(x.images.to(device), 0, branch_after);
      keep(slot++, f.reshape({static_cast<int64_t>(ids.size()), c->row_}).cpu().contiguous());
    }
  };

  if (mode == TrunkCacheMode::memory) {
    // Blocks padded to the same number of slots so that one allgather moves
    // them all; rows are then found through locate() (no reordered copy).
    at::Tensor mine = torch::zeros({c->slots_ * batch, c->row_});
    compute([&](int64_t slot, const at::Tensor& rows) { mine.narrow(0, slot * batch, rows.size(0)).copy_(rows); });
    c->blocks_ = torch::empty({c->ranks_ * c->slots_ * batch, c->row_});
    comm.allgather(comm::buffer_of(mine), comm::buffer_of(c->blocks_));
    return c;
  }

  // One file of every row in id order: rank 0 sizes it, each rank writes the
  // rows it computed at their offsets (disjoint ranges), then every rank
  // opens it for reading. One descriptor per rank whatever the rank count.
  fs::create_directories(folder);
  c->file_ = (fs::path(folder) / "trunk-features.f32").string();
  const size_t row_bytes = static_cast<size_t>(c->row_) * sizeof(float);
  if (comm.rank() == 0) {
    const int fd = ::open(c->file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(c->n_ * static_cast<int64_t>(row_bytes))) != 0) {
      const std::string why = errno_message("cannot write " + c->file_);
      if (fd >= 0) ::close(fd);
      throw Error(why);
    }
    ::close(fd);
  }
  comm.barrier();
  {
    const int fd = ::open(c->file_.c_str(), O_WRONLY);
    if (fd < 0)
      throw Error(errno_message("trunk cache: cannot open " + c->file_ +
                                " (is the run folder on a file system every rank sees?)"));
    try {
      std::vector<int64_t> mine = data::round_robin(batches, comm.rank(), comm.size());
      compute([&](int64_t slot, const at::Tensor& rows) {
        const int64_t first = mine[static_cast<size_t>(slot)] * batch;
        write_at(fd, static_cast<const char*>(rows.data_ptr()), static_cast<size_t>(rows.nbytes()),
                 static_cast<off_t>(first) * static_cast<off_t>(row_bytes), c->file_);
      });
    } catch (...) {
      ::close(fd);
      throw;
    }
    if (::close(fd) != 0) throw Error(errno_message("cannot write " + c->file_));
  }
  comm.barrier();  // every row is written
  c->fd_ = ::open(c->file_.c_str(), O_RDONLY);
  if (c->fd_ < 0) throw Error(errno_message("trunk cache: cannot open " + c->file_));
  c->owner_ = comm.rank() == 0;
  comm.barrier();  // every rank holds it open before anyone may remove it
  return c;
}

TrunkCache::~TrunkCache() {
  if (fd_ >= 0) ::close(fd_);
  if (owner_) {
    std::error_code ec;
    fs::remove(file_, ec);  // ranks still reading keep their open descriptor
  }
}

void TrunkCache::locate(int64_t id, int64_t& owner, int64_t& slot_row) const {
  SMOE_ASSERT(id >= 0 && id < n_, "trunk cache: id {} outside [0, {})", id, n_);
  const int64_t b = id / batch_;
  owner = b % ranks_;
  slot_row = (b / ranks_) * batch_ + id % batch_;
}

at::Tensor TrunkCache::rows(const std::vector<int64_t>& ids) const {
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), shape_.begin(), shape_.end());
  if (mode_ == TrunkCacheMode::memory) {
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
    SMOE_ASSERT(ids[i] >= 0 && ids[i] < n_, "trunk cache: id {} outside [0, {})", ids[i], n_);
    read_at(fd_, dst + i * row_bytes, row_bytes, static_cast<off_t>(ids[i]) * static_cast<off_t>(row_bytes));
  }
  return out.view(shape);
}

}  // namespace smoe::train
