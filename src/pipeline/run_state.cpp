#include "pipeline/run_state.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/sampler.h"
#include "pipeline/memory_plan.h"
#include "train/checkpoint.h"

namespace smoe::pipeline {
uint64_t trusted_seed(const Config& c) { return split_options(c, 0, 0, true).noise_seed; }

namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// Opens a split with the options the memory plan gives it (memory_plan.h);
// what it keeps in RAM comes off the rank's budget.
std::shared_ptr<data::Dataset> open_split(const Config& c, const std::string& split, int64_t limit,
                                          int64_t& budget_left, bool training = false) {
  SMOE_CHECK(!c.data.path.empty(), "config key 'data.path' is empty: name the dataset folder (smoe-data convert ...)");
  const data::DatasetOptions o = split_options(c, limit, budget_left, training);
  auto ds = data::Dataset::open(c.data.path, split, o);
  budget_left -= ds->in_memory() ? ds->size() * ds->image_bytes() : ds->cache_bytes();
  return ds;
}

}  // namespace

RunState::RunState(Config config, comm::Communicator& comm_, RunDir& run_, RuntimeInfo runtime)
    : cfg(std::move(config)),
      comm(comm_),
      run(run_),
      rt(runtime),
      budget_left(cfg.runtime.memory_budget_mb * kMiB),
      train(open_split(cfg, cfg.data.train_split, cfg.data.limit_train, budget_left, true)),
      test(open_split(cfg, cfg.data.test_split, cfg.data.limit_test, budget_left)),
      store(run, cfg, network_spec(cfg, train->manifest()), rt.device) {
  SMOE_CHECK(train->size() >= cfg.experts.count, "{} training samples for {} experts", train->size(),
             cfg.experts.count);
  base = store.build_base();
}

RunState::~RunState() = default;

void RunState::load_base(const std::string& path) {
  train::load_module(*base, path);
  base->eval();
}

bool RunState::take_budget(int64_t bytes) {
  if (bytes > budget_left) return false;
  budget_left -= bytes;
  return true;
}

int64_t RunState::embedding_width() const { return base->spec().prelogit_dim() + base->spec().num_classes; }

train::RowCache& RunState::open_embeddings() {
  if (!embeddings) embeddings = open_rows(store.embeddings_path(), {embedding_width()});
  return *embeddings;
}

models::GateFeatures RunState::gate_features(const std::vector<int64_t>& ids) {
  const int64_t D = base->spec().prelogit_dim();
  at::Tensor rows = open_embeddings().rows(ids);
  at::Tensor pre = rows.narrow(1, 0, D);
  return {cfg.cluster.normalize ? models::normalize_rows(pre) : pre.contiguous(),
          rows.narrow(1, D, rows.size(1) - D).contiguous()};
}

at::Tensor RunState::base_logits(const std::vector<int64_t>& ids) {
  const int64_t D = base->spec().prelogit_dim();
  at::Tensor rows = open_embeddings().rows(ids);
  return rows.narrow(1, D, rows.size(1) - D).contiguous();
}

data::BatchLoader RunState::test_loader(const std::vector<std::vector<int64_t>>& batches) const {
  std::vector<std::vector<int64_t>> mine;
  for (int64_t i : data::round_robin(static_cast<int64_t>(batches.size()), comm.rank(), comm.size()))
    mine.push_back(batches[static_cast<size_t>(i)]);
  return data::BatchLoader(test, std::move(mine), data::Transform{}, cfg.data.prefetch, rt.device.is_cuda());
}

train::RowCacheMode RunState::reserve_rows(int64_t bytes) {
  return take_budget(bytes) ? train::RowCacheMode::memory : train::RowCacheMode::disk;
}

std::unique_ptr<train::RowCache> RunState::open_rows(const std::string& file, const std::vector<int64_t>& shape) {
  const int64_t n = train->size();
  return train::RowCache::open(file, n, shape, reserve_rows(train::RowCache::bytes_of(n, shape)));
}

void RunState::drop_rows(std::unique_ptr<train::RowCache>& cache) {
  if (!cache) return;
  if (cache->mode() == train::RowCacheMode::memory) budget_left += cache->bytes();
  if (targets == cache.get()) targets = nullptr;
  cache.reset();
}

train::RowCache& RunState::open_g0() {
  if (!g0) {
    SMOE_CHECK(std::filesystem::exists(store.g0_path()),
               "{}: missing (a run folder whose cluster stage predates g0.f32? resume with --redo-from cluster)",
               store.g0_path());
    g0 = open_rows(store.g0_path(), {cfg.experts.count});
  }
  return *g0;
}

train::RowCache& RunState::open_q(int64_t round) {
  drop_rows(q);
  q = open_rows(store.q_path(round), {cfg.experts.count});
  return *q;
}

void RunState::prepare_expert_inputs() {
  if (expert_inputs) return;
  // The frozen trunk's outputs, computed once (shared out among the ranks)
  // and reused by every expert and epoch — unless the experts train on
  // augmented images, which the trunk must see one batch at a time.
  const TrunkCache want = cfg.experts.trunk_cache;
  if (want != TrunkCache::off && !cfg.experts.augment) {
    // In RAM a rank holds every row plus its own share (padded to whole
    // batches) during the allgather. Every rank decides alike: the same
    // config, splits and budget.
    const int64_t bytes = train::trunk_cache_bytes(base, train->size(), cfg.experts.branch_after);
    const int64_t row_bytes = bytes / std::max<int64_t>(train->size(), 1);
    const int64_t peak = bytes + bytes / comm.size() + row_bytes * cfg.eval.batch_size;
    const bool memory = want == TrunkCache::memory || (want == TrunkCache::automatic && take_budget(peak));
    Progress t("trunk", 1, 1);
    auto cache =
        train::build_trunk_cache(base, *train, cfg.experts.branch_after, cfg.eval.batch_size, comm,
                                 memory ? train::RowCacheMode::memory : train::RowCacheMode::disk, run.file("cache"));
    // On a GPU the cached rows go to the device too when they fit its budget.
    const bool on_device = !rt.device.is_cpu() && memory && bytes <= cfg.runtime.device_memory_budget_mb * kMiB &&
                           cache->keep_on(rt.device);
    trunk_cache_seconds = t.seconds();
    log::info("experts   trunk features cached in {}{} ({:.1f} MiB{}) in {}", train::mode_name(cache->mode()),
              on_device ? " on " + rt.device.str() : "", static_cast<double>(bytes) / kMiB,
              memory ? "" : fmt::format(", over the {} MiB left of runtime.memory_budget_mb", budget_left / kMiB),
              format_duration(trunk_cache_seconds));
    expert_inputs = std::make_unique<train::ExpertInputs>(std::move(cache));
  } else {
    data::Transform t;
    t.augment = cfg.experts.augment;
    t.crop_padding = cfg.data.crop_padding;
    t.hflip = cfg.data.hflip;
    expert_inputs = std::make_unique<train::ExpertInputs>(base, train, cfg.experts.branch_after, t, cfg.data.prefetch);
  }
}

std::string RunState::trunk_cache_mode() const {
  if (!expert_inputs) return "none";
  return expert_inputs->cached() ? train::mode_name(expert_inputs->cache()->mode()) : "off";
}

at::Tensor RunState::train_labels() const { return torch::tensor(train->labels(), torch::kLong); }

std::vector<double> ranks_peak_rss_mb(comm::Communicator& comm) {
  std::vector<int64_t> peaks(static_cast<size_t>(comm.size()));
  int64_t mine = memory::peak_resident_bytes();
  comm.allgather(comm::host_buffer(&mine, 1), comm::host_buffer(peaks));
  std::vector<double> mb;
  for (int64_t b : peaks) mb.push_back(std::round(static_cast<double>(b) / 1048576.0 * 10) / 10);
  return mb;
}

}  // namespace smoe::pipeline
