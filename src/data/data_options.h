// The data section of the configuration (data.*): where the dataset is, how
// it is read, augmented and corrupted. Each key beside its field
// (core/options.h).
#pragma once

#include <cstdint>
#include <string>

#include "core/options.h"

namespace smoe {
namespace data {

// How a split is read (data.storage): whole into memory, or streamed from
// the shards; auto: memory when it fits the budget.
enum class StorageMode { automatic, memory, stream };
inline const options::Names<StorageMode>& option_names(StorageMode) {
  static const options::Names<StorageMode> n{
      {StorageMode::automatic, "auto"}, {StorageMode::memory, "memory"}, {StorageMode::stream, "stream"}};
  return n;
}

// How the shards are checked against the manifest before training
// (data.verify, data/integrity.h).
enum class VerifyMode { hash, size, off };
inline const options::Names<VerifyMode>& option_names(VerifyMode) {
  static const options::Names<VerifyMode> n{
      {VerifyMode::hash, "hash"}, {VerifyMode::size, "size"}, {VerifyMode::off, "off"}};
  return n;
}

}  // namespace data

struct DataConfig {
  std::string path;  // dataset folder (manifest.json + shards)
  std::string train_split = "train";
  std::string test_split = "test";
  int64_t limit_train = 0;  // 0 = every sample
  int64_t limit_test = 0;   // 0 = every sample
  data::StorageMode storage = data::StorageMode::automatic;
  int64_t cache_mb = 256;  // HDF5 chunk cache per shard when streaming
  data::VerifyMode verify = data::VerifyMode::hash;
  int64_t prefetch = 2;            // batches prepared ahead on the loader thread
  int64_t crop_padding = 2;        // augmentation: random crop after zero padding
  bool hflip = true;               // augmentation: random horizontal flip
  double label_noise = 0.0;        // share of training labels flipped to another class (symmetric noise)
  double trusted_fraction = 0.05;  // share of training samples in the trusted labelled subset (never noisy)

  void describe(options::Table& t) {
    t.key("path", path, "dataset folder made by smoe-data convert");
    t.key("train_split", train_split, "split to train on");
    t.key("test_split", test_split, "split to evaluate on");
    t.key("limit_train", limit_train, "use the first N training samples (0 = all)").at_least(0);
    t.key("limit_test", limit_test, "use the first N test samples (0 = all)").at_least(0);
    t.key("storage", storage, "memory: load splits whole; stream: random HDF5 reads; auto: memory below the budget");
    t.key("cache_mb", cache_mb,
          "HDF5 chunk cache per open shard when streaming (MiB); a split's caches together take at most a quarter "
          "of what runtime.memory_budget_mb leaves")
        .at_least(1);
    t.key("verify", verify,
          "shards checked against the manifest before training: hash (SHA-256, cached per run folder), size, off");
    t.key("prefetch", prefetch, "batches prepared ahead by the loader thread (0 = none)").at_least(0);
    t.key("crop_padding", crop_padding, "augmentation: zero padding (pixels) before the random crop").at_least(0);
    t.key("hflip", hflip, "augmentation: random horizontal flips");
    t.key("label_noise", label_noise,
          "symmetric label noise: this share of the training labels (outside the trusted subset) is replaced by "
          "another class, chosen by a hash of (seed, id); the test split stays clean")
        .at_least(0)
        .at_most(1);
    t.key("trusted_fraction", trusted_fraction,
          "share of the training samples (chosen by a hash of (seed, id)) forming the trusted labelled subset: never "
          "noisy, and what the pseudo_label stage (scheme dfcp) labels the others from")
        .at_least(0)
        .at_most(1);
  }
};

}  // namespace smoe
