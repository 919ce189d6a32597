// Per-sample rows (the frozen trunk's features, the base model's embeddings
// and logits) computed once for every training sample: in fixed batches of
// consecutive ids shared round-robin among the ranks, so that every row is
// the same whichever rank computed it, and then kept where the per-rank
// memory budget allows:
//   memory  every rank holds every row (N x row bytes a rank);
//   disk    one file (on the run folder's file system, which every rank
//           sees) holds every row in id order: each rank writes the rows it
//           computed at their offsets, and every rank reads the rows it needs
//           back with pread, so a rank holds only the batch it works on (the
//           page cache does the rest).
// Both give the same rows bit for bit. A cache built with a file to keep
// (the embed stage's embeddings.f32) can be opened again by a resumed run;
// such files are written atomically (file.part, fsync, rename by rank 0
// once every rank has written). write() does the same for rows a rank
// computed in its own order (the initial gate g0 of the rows a rank
// clustered): per-sample [N, K] tensors live in the run folder, never
// gathered on one rank.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "data/dataset.h"
#include "models/network.h"

namespace smoe::train {

enum class RowCacheMode { memory, disk };
const char* mode_name(RowCacheMode m);

class RowCache {
 public:
  // Rows [n, shape...] of the given consecutive ids, on any device.
  using Compute = std::function<at::Tensor(const std::vector<int64_t>& ids)>;

  // Collective: computes the rows of ids [0, n) in batches of `batch` ids.
  // Disk mode writes them to `file`; with keep_file the file is the result
  // (written whatever the mode, and loaded whole in memory mode), else it
  // goes with the cache.
  static std::unique_ptr<RowCache> build(int64_t n, std::vector<int64_t> shape, int64_t batch, comm::Communicator& comm,
                                         RowCacheMode mode, const std::string& file, const Compute& compute,
                                         bool keep_file = false);
  // The same computed by this rank alone (no collective): in disk mode the
  // file goes with the cache. An expert task's logits on the training set.
  static std::unique_ptr<RowCache> build_local(int64_t n, std::vector<int64_t> shape, int64_t batch, RowCacheMode mode,
                                               const std::string& file, const Compute& compute);
  // Opens the rows a build with keep_file left in `file` (memory: loads them).
  static std::unique_ptr<RowCache> open(const std::string& file, int64_t n, std::vector<int64_t> shape,
                                        RowCacheMode mode);
  // Collective: writes this rank's `rows` [m, shape...] at their `ids` [m]
  // (any ids, in any order; the ranks' ids together cover [0, n) once) into
  // `file` in id order, atomically, and opens it on every rank in `mode`.
  static std::unique_ptr<RowCache> write(const std::string& file, int64_t n, std::vector<int64_t> shape,
                                         const at::Tensor& ids, const at::Tensor& rows, comm::Communicator& comm,
                                         RowCacheMode mode);
  // A memory cache holding `rows` [n, ...] as they are.
  static std::unique_ptr<RowCache> from_rows(const at::Tensor& rows);
  ~RowCache();

  // Rows of `ids` (any order), float [n, shape...], on the CPU — or on the
  // device the cache was kept on.
  at::Tensor rows(const std::vector<int64_t>& ids) const;
  // Memory mode: keeps the rows on `device` (a GPU's memory, when they fit
  // the budget the caller checked), so that batches need no copy; false (and
  // nothing moved) in disk mode.
  bool keep_on(const c10::Device& device);
  c10::Device device() const { return blocks_.defined() ? blocks_.device() : c10::Device(c10::kCPU); }
  // Column j of rows [n, J] (float [n]), read in batches of `batch` rows:
  // what one expert needs of g0 or q.
  at::Tensor column(int64_t j, int64_t batch) const;
  // The sum of every row (double [row numel]), accumulated in id order in
  // batches of `batch` rows: the same in either mode.
  at::Tensor sum_rows(int64_t batch) const;
  int64_t size() const { return n_; }
  RowCacheMode mode() const { return mode_; }
  int64_t bytes() const { return n_ * row_ * static_cast<int64_t>(sizeof(float)); }
  static int64_t bytes_of(int64_t n, const std::vector<int64_t>& shape);

 private:
  RowCache() = default;
  // f(start, rows [m, row numel]) over consecutive batches of `batch` ids covering [0, n).
  void for_each_batch(int64_t batch, const std::function<void(int64_t start, const at::Tensor&)>& f) const;
  // Memory mode: where id's row lives, rank `owner`'s block at row `slot_row`.
  void locate(int64_t id, int64_t& owner, int64_t& slot_row) const;

  RowCacheMode mode_ = RowCacheMode::memory;
  int64_t n_ = 0, batch_ = 0, ranks_ = 1, slots_ = 0, row_ = 0;
  std::vector<int64_t> shape_;
  at::Tensor blocks_;    // memory: [ranks * slots * batch, row]
  std::string file_;     // disk: the rows in id order
  int fd_ = -1;          // disk: open for reading
  bool remove_ = false;  // disk: this rank removes the file with its cache
};

// The trunk's output (blocks [0, branch_after)) of every sample of `ds`.
std::unique_ptr<RowCache> build_trunk_cache(models::Backbone& base, const data::Dataset& ds, int64_t branch_after,
                                            int64_t batch, comm::Communicator& comm, RowCacheMode mode,
                                            const std::string& folder);
int64_t trunk_cache_bytes(const models::Backbone& base, int64_t samples, int64_t branch_after);

}  // namespace smoe::train
