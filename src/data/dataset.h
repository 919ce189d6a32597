// Reading a split of a dataset folder from C++: random access to images by
// global sample id, from memory (the split read whole, shard by shard) or
// streamed from the HDF5 shards through a chunk cache sized to the shard.
// Torch-free; batch.h turns ids into normalised float tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/manifest.h"

namespace smoe::data {

class ShardReader;

struct DatasetOptions {
  std::string storage = "auto";     // auto | memory | stream
  int64_t memory_budget_mb = 8192;  // 'auto' streams splits larger than this
  int64_t cache_mb = 256;           // chunk cache per shard when streaming
  int64_t cache_budget_mb = 0;      // streaming: all the split's chunk caches together (0 = no limit)
  int64_t limit = 0;                // keep the first `limit` samples (0 = all)
};

class Dataset {
 public:
  // Opens split `split` of the dataset folder `dir`.
  static std::shared_ptr<Dataset> open(const std::string& dir, const std::string& split,
                                       const DatasetOptions& options = {});
  ~Dataset();

  const Manifest& manifest() const { return manifest_; }
  const std::string& split() const { return split_.name; }
  int64_t size() const { return size_; }
  const std::vector<int64_t>& shape() const { return manifest_.shape; }  // C, H, W
  int64_t image_bytes() const { return manifest_.image_bytes(); }
  int64_t num_classes() const { return manifest_.num_classes; }
  // Labels of samples [0, size()), always in memory.
  const std::vector<int64_t>& labels() const { return labels_; }
  // Per-channel normalisation statistics (the train split's).
  const std::vector<double>& mean() const { return manifest_.stats_split().mean; }
  const std::vector<double>& stddev() const { return manifest_.stats_split().std; }
  bool in_memory() const { return !pixels_.empty() || size_ == 0; }
  // Bytes the streamed shards' chunk caches may hold together (0 in memory).
  int64_t cache_bytes() const { return cache_bytes_; }

  // Copies the images of ids[0..n) into out (n * image_bytes(), in the given
  // order). Thread-safe.
  void read(const int64_t* ids, size_t n, uint8_t* out) const;

 private:
  Dataset() = default;

  Manifest manifest_;
  SplitInfo split_;
  int64_t size_ = 0;
  int64_t cache_bytes_ = 0;
  std::vector<int64_t> labels_;
  std::vector<uint8_t> pixels_;                       // memory storage
  std::vector<std::unique_ptr<ShardReader>> shards_;  // stream storage
};

}  // namespace smoe::data
