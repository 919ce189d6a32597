// What a run's caches take of runtime.memory_budget_mb on a rank, planned from
// the config and the dataset's manifest before anything is opened. RunState
// opens the splits with split_options() and takes what split_footprint()
// says; the load-time checks use the same plan, so that a cache that cannot
// fall back to disk (data.storage memory, experts.trunk_cache memory, a
// torch features file) and does not fit the budget is refused before the run
// folder exists, not when a stage reaches it. Torch-free.
#pragma once

#include <cstdint>
#include <string>

#include "data/dataset.h"

namespace smoe {
struct Config;
}

namespace smoe::pipeline {

// The options a split of the run opens with, `budget_left` bytes of the
// budget being left: with data.storage auto it is read whole when it fits;
// the training split (`training`) carries the label noise.
data::DatasetOptions split_options(const Config& c, int64_t limit, int64_t budget_left, bool training);

struct MemoryPlan {
  int64_t budget = 0;  // runtime.memory_budget_mb, in bytes
  data::SplitFootprint train, test;
  int64_t left_after_splits() const { return budget - train.bytes - test.bytes; }
};
MemoryPlan plan_memory(const Config& c, const data::Manifest& m);

// Refuses (one line naming the keys) a run whose cache of `bytes` that must
// be in RAM does not fit what the splits leave of the budget. `what` names
// the cache and the key that put it in RAM; `instead` is the other way out.
void check_fits_budget(const Config& c, const data::Manifest& m, int64_t bytes, const std::string& what,
                       const std::string& instead);

// data.storage memory: the splits, read whole, must fit the budget.
void check_split_storage(const Config& c, const data::Manifest& m);

}  // namespace smoe::pipeline
