#include "pipeline/memory_plan.h"

#include <algorithm>

#include "core/error.h"
#include "core/rng.h"
#include "pipeline/config.h"

namespace smoe::pipeline {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

std::string mib(int64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / kMiB); }

}  // namespace

data::DatasetOptions split_options(const Config& c, int64_t limit, int64_t budget_left, bool training) {
  data::DatasetOptions o;
  o.storage = c.data.storage;
  o.memory_budget_mb = std::max<int64_t>(budget_left / kMiB, 0);
  o.cache_mb = c.data.cache_mb;
  // Streamed, the split's HDF5 chunk caches may take a quarter of what is
  // left (at least 1 MiB a shard).
  o.cache_budget_mb = std::max<int64_t>(budget_left / 4 / kMiB, 1);
  o.limit = limit;
  if (training) {  // label noise on the training split only
    o.label_noise = c.data.label_noise;
    o.trusted_fraction = c.data.trusted_fraction;
    o.noise_seed = derive_seed(c.seed, "label-noise");
  }
  return o;
}

MemoryPlan plan_memory(const Config& c, const data::Manifest& m) {
  MemoryPlan p;
  p.budget = c.runtime.memory_budget_mb * kMiB;
  p.train = data::split_footprint(m, c.data.train_split, split_options(c, c.data.limit_train, p.budget, true));
  p.test =
      data::split_footprint(m, c.data.test_split, split_options(c, c.data.limit_test, p.budget - p.train.bytes, false));
  return p;
}

void check_fits_budget(const Config& c, const data::Manifest& m, int64_t bytes, const std::string& what,
                       const std::string& instead) {
  const MemoryPlan p = plan_memory(c, m);
  const int64_t left = p.left_after_splits();
  SMOE_CHECK(bytes <= left,
             "{}: {} must be in RAM on every rank, but runtime.memory_budget_mb ({}) leaves {} after the data "
             "splits ({} in RAM, {} of chunk caches): raise runtime.memory_budget_mb or {}",
             what, mib(bytes), c.runtime.memory_budget_mb, mib(std::max<int64_t>(left, 0)),
             mib((p.train.in_memory ? p.train.bytes : 0) + (p.test.in_memory ? p.test.bytes : 0)),
             mib((p.train.in_memory ? 0 : p.train.bytes) + (p.test.in_memory ? 0 : p.test.bytes)), instead);
}

void check_split_storage(const Config& c, const data::Manifest& m) {
  if (c.data.storage != data::StorageMode::memory) return;
  const MemoryPlan p = plan_memory(c, m);
  SMOE_CHECK(p.train.bytes + p.test.bytes <= p.budget,
             "config key 'data.storage' is memory: the splits '{}' ({}) and '{}' ({}) read whole need more than "
             "runtime.memory_budget_mb ({}) on every rank: raise the budget or set data.storage auto (what does not "
             "fit is streamed)",
             c.data.train_split, mib(p.train.bytes), c.data.test_split, mib(p.test.bytes), c.runtime.memory_budget_mb);
}

}  // namespace smoe::pipeline
