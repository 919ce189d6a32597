#include "data/dataset.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/rng.h"
#include "data/shard.h"

namespace smoe::data {

struct Dataset::Storage {
  std::vector<uint8_t> pixels;                       // memory storage
  std::vector<std::unique_ptr<ShardReader>> shards;  // stream storage
};

Dataset::Dataset() : storage_(std::make_shared<Storage>()) {}

bool Dataset::in_memory() const { return !storage_->pixels.empty() || size_ == 0; }
Dataset::~Dataset() = default;

bool is_trusted(uint64_t seed, int64_t id, double fraction) {
  if (fraction <= 0) return false;
  return static_cast<double>(mix64(seed ^ mix64(static_cast<uint64_t>(id) + 0x7275737465640000ULL))) / 0x1p64 <
         fraction;
}

std::shared_ptr<Dataset> Dataset::relabelled(std::vector<int64_t> labels) const {
  SMOE_CHECK(static_cast<int64_t>(labels.size()) == size_, "relabelling split '{}' of {} samples with {} labels",
             split_.name, size_, labels.size());
  for (int64_t y : labels)
    SMOE_CHECK(y >= 0 && y < num_classes(), "relabelling split '{}': label {} is outside [0, {})", split_.name, y,
               num_classes());
  std::shared_ptr<Dataset> ds(new Dataset(*this));
  ds->true_labels_ = true_labels();
  ds->labels_ = std::move(labels);
  return ds;
}

SplitFootprint split_footprint(const Manifest& m, const std::string& split, const DatasetOptions& options) {
  const SplitInfo& s = m.split(split);
  SMOE_CHECK(options.limit >= 0, "sample limit must be >= 0, got {}", options.limit);
  SplitFootprint f;
  f.samples = options.limit > 0 ? std::min(options.limit, s.count) : s.count;
  const int64_t img = m.image_bytes();
  const int64_t pixels = f.samples * img;
  f.in_memory = options.storage == StorageMode::memory ||
                (options.storage == StorageMode::automatic && pixels <= options.memory_budget_mb * (int64_t{1} << 20));
  if (f.in_memory) {
    f.bytes = pixels;
    return f;
  }
  for (const auto& sh : s.shards) {
    if (sh.offset >= f.samples) {
      f.shard_cache_bytes.push_back(0);
      continue;
    }
    // Every shard's cache fills as random reads reach it: together they
    // stay within the split's share of the memory budget.
    int64_t per_shard = options.cache_mb << 20;
    if (options.cache_budget_mb > 0)
      per_shard = std::min(per_shard, (options.cache_budget_mb << 20) / static_cast<int64_t>(s.shards.size()));
    // The whole shard, in whole chunks (the cache holds chunks: one short of
    // the shard would evict on every pass), when the budget allows.
    const int64_t chunk = std::max<int64_t>(m.chunk_images, 1);
    const int64_t shard_in_chunks = (sh.count + chunk - 1) / chunk * chunk * img;
    const int64_t cache = std::max<int64_t>(std::min(shard_in_chunks, per_shard), 1 << 20);
    f.shard_cache_bytes.push_back(cache);
    f.bytes += cache;
  }
  return f;
}

std::shared_ptr<Dataset> Dataset::open(const std::string& dir, const std::string& split,
                                       const DatasetOptions& options) {
  std::shared_ptr<Dataset> ds(new Dataset());
  ds->manifest_ = Manifest::load(dir);
  ds->split_ = ds->manifest_.split(split);
  const SplitInfo& s = ds->split_;
  const SplitFootprint footprint = split_footprint(ds->manifest_, split, options);
  ds->size_ = footprint.samples;
  const bool memory = footprint.in_memory;
  const int64_t img = ds->image_bytes();
  const int64_t bytes = ds->size_ * img;

  ds->labels_.resize(static_cast<size_t>(ds->size_));
  if (memory) ds->storage_->pixels.resize(static_cast<size_t>(bytes));
  std::vector<int64_t> shard_labels;
  for (size_t k = 0; k < s.shards.size(); ++k) {
    const ShardInfo& sh = s.shards[k];
    if (sh.offset >= ds->size_) break;
    const std::string path = (std::filesystem::path(dir) / sh.file).string();
    const int64_t shard_bytes = sh.count * img;
    const size_t cache = memory ? 0 : static_cast<size_t>(footprint.shard_cache_bytes[k]);
    auto reader = std::make_unique<ShardReader>(path, ds->shape(), cache);
    if (!memory) ds->cache_bytes_ += static_cast<int64_t>(cache);
    SMOE_CHECK(reader->count() == sh.count, "{}: holds {} samples but the manifest says {}", path, reader->count(),
               sh.count);
    const int64_t take = std::min(sh.count, ds->size_ - sh.offset);
    shard_labels.resize(static_cast<size_t>(sh.count));
    reader->read_labels(shard_labels.data());
    for (int64_t i = 0; i < take; ++i) {
      int64_t y = shard_labels[static_cast<size_t>(i)];
      SMOE_CHECK(y >= 0 && y < ds->num_classes(), "{}: label {} of sample {} is outside [0, {})", path, y, i,
                 ds->num_classes());
      ds->labels_[static_cast<size_t>(sh.offset + i)] = y;
    }
    if (memory) {
      if (take == sh.count) {
        reader->read_images(ds->storage_->pixels.data() + sh.offset * img);
      } else {
        std::vector<uint8_t> all(static_cast<size_t>(shard_bytes));
        reader->read_images(all.data());
        std::memcpy(ds->storage_->pixels.data() + sh.offset * img, all.data(), static_cast<size_t>(take * img));
      }
    } else {
      ds->storage_->shards.push_back(std::move(reader));
    }
  }
  SMOE_CHECK(options.label_noise >= 0 && options.label_noise <= 1, "label noise must be in [0, 1], got {}",
             options.label_noise);
  if (options.label_noise > 0 && ds->num_classes() > 1) {
    // Symmetric noise: a flipped label moves to one of the C - 1 other classes.
    ds->true_labels_ = ds->labels_;
    const uint64_t C = static_cast<uint64_t>(ds->num_classes());
    for (int64_t i = 0; i < ds->size_; ++i) {
      if (is_trusted(options.noise_seed, i, options.trusted_fraction)) continue;
      const uint64_t h = mix64(options.noise_seed ^ mix64(static_cast<uint64_t>(i)));
      if (static_cast<double>(h >> 11) / 0x1p53 >= options.label_noise) continue;
      auto& y = ds->labels_[static_cast<size_t>(i)];
      y = static_cast<int64_t>((static_cast<uint64_t>(y) + 1 + mix64(h) % (C - 1)) % C);
    }
  }
  return ds;
}

void Dataset::read(const int64_t* ids, size_t n, uint8_t* out) const {
  const int64_t img = image_bytes();
  for (size_t i = 0; i < n; ++i)
    SMOE_CHECK(ids[i] >= 0 && ids[i] < size_, "sample id {} outside split '{}' of {} samples", ids[i], split_.name,
               size_);
  const auto& pixels = storage_->pixels;
  if (!pixels.empty() || size_ == 0) {
    for (size_t i = 0; i < n; ++i) std::memcpy(out + i * img, pixels.data() + ids[i] * img, static_cast<size_t>(img));
    return;
  }
  // Streaming: group by shard, read each shard's rows in ascending order
  // (friendlier to the chunk cache), then place them where they were asked.
  std::map<size_t, std::vector<std::pair<int64_t, size_t>>> by_shard;  // shard -> (row, position)
  for (size_t i = 0; i < n; ++i) {
    size_t s = split_.shard_of(ids[i]);
    by_shard[s].push_back({ids[i] - split_.shards[s].offset, i});
  }
  std::vector<int64_t> rows;
  std::vector<uint8_t> buf;
  for (auto& [s, items] : by_shard) {
    std::sort(items.begin(), items.end());
    rows.clear();
    for (auto& it : items) rows.push_back(it.first);
    buf.resize(rows.size() * static_cast<size_t>(img));
    storage_->shards[s]->read_rows(rows.data(), rows.size(), buf.data());
    for (size_t j = 0; j < items.size(); ++j)
      std::memcpy(out + items[j].second * img, buf.data() + j * img, static_cast<size_t>(img));
  }
}

}  // namespace smoe::data
