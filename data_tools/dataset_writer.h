// Writes a dataset folder (docs/architecture.md, "Data: HDF5 shards") from samples
// streamed in split by split: shards of `shard_size` images are flushed as
// they fill, so memory stays bounded by one shard whatever the dataset's size.
// Everything is written into a temporary folder beside the output and renamed
// into place by finish(): an interrupted or failed conversion leaves nothing
// half-written, and an existing output is replaced only with `force`.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/manifest.h"
#include "data/shard.h"

namespace smoe {
class AtomicDir;
}

namespace smoe::data_tools {

struct WriterOptions {
  int64_t shard_size = 10000;  // images per shard
  data::ShardWriteOptions shard;
  bool force = false;  // replace an existing output folder
};

// Parses "none", "gzip" (level 1) or "gzip-N" into a deflate level.
int parse_compression(const std::string& text);

class DatasetWriter {
 public:
  DatasetWriter(const std::string& out_dir, std::string name, std::vector<int64_t> shape,
                std::vector<std::string> class_names, const WriterOptions& options);
  ~DatasetWriter();

  void begin_split(const std::string& split);
  // Adds images [n, C, H, W] with their labels; `origin` names the source in
  // errors (e.g. a file name) and `first_index` the first sample's index there.
  void add(const uint8_t* images, const int64_t* labels, int64_t n, const std::string& origin, int64_t first_index = 0);
  void end_split();
  void set_source(nlohmann::json source) { manifest_.source = std::move(source); }
  // Writes manifest.json and moves the folder into place.
  data::Manifest finish();

 private:
  void flush_shard();

  std::string out_dir_;
  WriterOptions options_;
  std::unique_ptr<AtomicDir> dir_;
  data::Manifest manifest_;
  data::SplitInfo split_;
  bool in_split_ = false;
  std::vector<uint8_t> images_;  // pending shard
  std::vector<int64_t> labels_;
  std::vector<uint64_t> sum_, sumsq_;  // exact per-channel pixel sums of the split
};

}  // namespace smoe::data_tools
