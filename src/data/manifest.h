// A dataset folder (docs/architecture.md, "Data: HDF5 shards"): manifest.json plus
// <split>-NNNNN.h5 shards, each with /images uint8 [n, C, H, W] (chunked) and
// /labels int64 [n]. A sample's global id within its split is its shard's
// offset plus its index inside the shard.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace smoe::data {

struct ShardInfo {
  std::string file;  // relative to the dataset folder
  int64_t offset = 0;
  int64_t count = 0;
  std::string sha256;
  int64_t bytes = 0;  // file size; 0 in manifests written before it was recorded
};

struct SplitInfo {
  std::string name;
  int64_t count = 0;
  std::vector<ShardInfo> shards;
  std::vector<int64_t> class_counts;  // [num_classes]
  std::vector<double> mean;           // per channel, pixels scaled to [0, 1]
  std::vector<double> std;

  // Index of the shard holding global id `id`.
  size_t shard_of(int64_t id) const;
};

// Whether `s` is valid UTF-8 (JSON text, so every name in a manifest, must be).
bool is_valid_utf8(const std::string& s);

struct Manifest {
  static constexpr const char* kFileName = "manifest.json";
  static constexpr const char* kFormat = "smoe-dataset";
  static constexpr int kVersion = 1;

  std::string name;
  std::vector<int64_t> shape;  // C, H, W
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  std::vector<SplitInfo> splits;
  int64_t chunk_images = 0;
  std::string compression;  // "none" or "gzip-N"
  nlohmann::json source = nlohmann::json::object();

  // Reads and checks DIR/manifest.json; errors name the file and the field.
  static Manifest load(const std::string& dir);
  // Writes DIR/manifest.json atomically.
  void save(const std::string& dir) const;

  nlohmann::json to_json() const;
  static Manifest from_json(const nlohmann::json& j, const std::string& origin);

  bool has_split(const std::string& name) const;
  const SplitInfo& split(const std::string& name) const;
  int64_t image_bytes() const { return shape.size() == 3 ? shape[0] * shape[1] * shape[2] : 0; }
  // Normalisation statistics: the train split's if there is one, else the first split's.
  const SplitInfo& stats_split() const;
};

}  // namespace smoe::data
