// The frozen trunk's outputs of every training sample, computed once for the
// experts (their shared blocks never change): in fixed batches of
// consecutive ids shared round-robin among the ranks, so that every row is
// the same whichever rank computed it, and then kept where the per-rank
// memory budget allows:
//   memory  every rank holds every row (one allgather; N x row bytes a rank);
//   disk    one file in a cache folder (on the run folder's file system,
//           which every rank sees) holds every row in id order: each rank
//           writes the rows it computed at their offsets, and every rank
//           reads the rows it needs back with pread, so a rank holds only the
//           batch it is training on (the page cache does the rest).
// Both give the same rows bit for bit, hence the same experts.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "data/dataset.h"
#include "models/network.h"

namespace smoe::train {

enum class TrunkCacheMode { memory, disk };
const char* mode_name(TrunkCacheMode m);

class TrunkCache {
 public:
  // Collective: computes the trunk (blocks [0, branch_after)) of every
  // sample of `ds` in batches of `batch` ids; `folder` holds the files of
  // the disk mode.
  static std::unique_ptr<TrunkCache> build(models::Backbone& base, const data::Dataset& ds, int64_t branch_after,
                                           int64_t batch, comm::Communicator& comm, TrunkCacheMode mode,
                                           const std::string& folder);
  // A memory cache holding `rows` [n, C', H', W'] as they are (tests, and
  // features computed elsewhere).
  static std::unique_ptr<TrunkCache> from_rows(const at::Tensor& rows);
  // Bytes of all rows (what the memory mode holds on every rank).
  static int64_t bytes_of(const models::Backbone& base, int64_t samples, int64_t branch_after);
  ~TrunkCache();

  // Rows of `ids` (any order), float [n, C', H', W'].
  at::Tensor rows(const std::vector<int64_t>& ids) const;
  int64_t size() const { return n_; }
  TrunkCacheMode mode() const { return mode_; }
  int64_t bytes() const { return n_ * row_ * static_cast<int64_t>(sizeof(float)); }

 private:
  TrunkCache() = default;
  // Memory mode: where id's row lives, rank `owner`'s block at row `slot_row`.
  void locate(int64_t id, int64_t& owner, int64_t& slot_row) const;

  TrunkCacheMode mode_ = TrunkCacheMode::memory;
  int64_t n_ = 0, batch_ = 0, ranks_ = 1, slots_ = 0, row_ = 0;
  std::vector<int64_t> shape_;  // C', H', W'
  at::Tensor blocks_;           // memory: [ranks * slots * batch, row]
  std::string file_;            // disk: the rows in id order
  int fd_ = -1;                 // disk: open for reading
  bool owner_ = false;          // disk: rank 0 removes the file with its cache
};

}  // namespace smoe::train
