// Reading a split of a dataset folder from C++: random access to images by
// global sample id, from memory (the split read whole, shard by shard) or
// streamed from the HDF5 shards through a chunk cache sized to the shard.
// Torch-free; batch.h turns ids into normalised float tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/data_options.h"
#include "data/manifest.h"

namespace smoe::data {

class ShardReader;

struct DatasetOptions {
  StorageMode storage = StorageMode::automatic;
  int64_t memory_budget_mb = 8192;  // 'auto' streams splits larger than this
  int64_t cache_mb = 256;           // chunk cache per shard when streaming
  int64_t cache_budget_mb = 0;      // streaming: all the split's chunk caches together (0 = no limit)
  int64_t limit = 0;                // keep the first `limit` samples (0 = all)
  // Symmetric label noise (DFCP-MoE's motivation): each sample's label is
  // replaced, with probability label_noise, by one of the other classes,
  // both chosen by a hash of (noise_seed, id); trusted samples
  // (is_trusted()) keep their true label. 0 = the labels as stored.
  double label_noise = 0;
  double trusted_fraction = 0;
  uint64_t noise_seed = 0;
};

// Whether sample `id` belongs to the trusted labelled subset (about
// `fraction` of the samples, chosen by a hash of (seed, id)).
bool is_trusted(uint64_t seed, int64_t id, double fraction);

// What opening a split takes of the memory, decided from its manifest alone
// (so that a run can check its memory budget before it opens anything):
// the split's pixels when it is read whole, else one chunk cache per shard.
struct SplitFootprint {
  bool in_memory = false;
  int64_t samples = 0;                     // after DatasetOptions::limit
  std::vector<int64_t> shard_cache_bytes;  // streaming: each shard's chunk cache (0 past the limit)
  int64_t bytes = 0;                       // the pixels, or the caches together
};
SplitFootprint split_footprint(const Manifest& manifest, const std::string& split, const DatasetOptions& options);

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
  // Labels of samples [0, size()), always in memory: the training labels
  // (with DatasetOptions::label_noise, the noisy ones).
  const std::vector<int64_t>& labels() const { return labels_; }
  // The labels as stored (the ground truth the noise was added to).
  const std::vector<int64_t>& true_labels() const { return true_labels_.empty() ? labels_ : true_labels_; }
  // The same samples (images shared, not copied) with other training labels
  // (pseudo-labels); true_labels() stay. labels.size() must be size().
  std::shared_ptr<Dataset> relabelled(std::vector<int64_t> labels) const;
  // Per-channel normalisation statistics (the train split's).
  const std::vector<double>& mean() const { return manifest_.stats_split().mean; }
  const std::vector<double>& stddev() const { return manifest_.stats_split().std; }
  bool in_memory() const;
  // Bytes the streamed shards' chunk caches may hold together (0 in memory).
  int64_t cache_bytes() const { return cache_bytes_; }

  // Copies the images of ids[0..n) into out (n * image_bytes(), in the given
  // order). Thread-safe.
  void read(const int64_t* ids, size_t n, uint8_t* out) const;

 private:
  Dataset();
  struct Storage;  // the images: in memory, or the open shards; shared by relabelled copies

  Manifest manifest_;
  SplitInfo split_;
  int64_t size_ = 0;
  int64_t cache_bytes_ = 0;
  std::vector<int64_t> labels_;
  std::vector<int64_t> true_labels_;  // set when the training labels differ from the stored ones
  std::shared_ptr<Storage> storage_;
};

}  // namespace smoe::data
