#include "data_tools/dataset_writer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hash.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {

int parse_compression(const std::string& text) {
  if (text == "none") return 0;
  if (text == "gzip") return 1;
  if (text.rfind("gzip-", 0) == 0 && text.size() == 6 && text[5] >= '1' && text[5] <= '9') return text[5] - '0';
  fail("--compression '{}': expected none, gzip or gzip-1 .. gzip-9", text);
}

DatasetWriter::DatasetWriter(const std::string& out_dir, std::string name, std::vector<int64_t> shape,
                             std::vector<std::string> class_names, const WriterOptions& options)
    : out_dir_(out_dir), options_(options) {
  SMOE_CHECK(!out_dir.empty(), "no output folder given");
  SMOE_CHECK(options.force || !fs::exists(out_dir), "output folder {} already exists (use --force to replace it)",
             out_dir);
  SMOE_CHECK(options.shard_size >= 1, "--shard-size must be at least 1, got {}", options.shard_size);
  SMOE_CHECK(options.shard.chunk_images >= 0, "--chunk must be at least 0 (0: chunks of about 256 KiB), got {}",
             options.shard.chunk_images);
  SMOE_CHECK(shape.size() == 3 && shape[0] > 0 && shape[1] > 0 && shape[2] > 0, "invalid image shape");
  if (options_.shard.chunk_images == 0) {
    // About 256 KiB of pixels a chunk (at most 256 images): a random read of
    // one image from a streamed split inflates one such chunk, so larger
    // chunks cost time (3 MiB chunks of 64 x 64 x 3 images made a streamed
    // base stage 2.3x slower than 32-image ones, measured), smaller ones
    // compress worse.
    options_.shard.chunk_images = std::clamp<int64_t>((256 << 10) / (shape[0] * shape[1] * shape[2]), 1, 256);
  }
  SMOE_CHECK(!class_names.empty(), "a dataset needs at least one class");
  manifest_.name = std::move(name);
  manifest_.shape = std::move(shape);
  manifest_.num_classes = static_cast<int64_t>(class_names.size());
  manifest_.class_names = std::move(class_names);
  manifest_.chunk_images = options_.shard.chunk_images;
  manifest_.compression = options.shard.gzip_level == 0 ? "none" : fmt::format("gzip-{}", options.shard.gzip_level);
  dir_ = std::make_unique<AtomicDir>(out_dir);
}

DatasetWriter::~DatasetWriter() = default;

void DatasetWriter::begin_split(const std::string& split) {
  SMOE_ASSERT(!in_split_, "begin_split inside a split");
  SMOE_CHECK(!manifest_.has_split(split), "split '{}' given twice", split);
  split_ = data::SplitInfo{};
  split_.name = split;
  split_.class_counts.assign(static_cast<size_t>(manifest_.num_classes), 0);
  sum_.assign(static_cast<size_t>(manifest_.shape[0]), 0);
  sumsq_.assign(sum_.size(), 0);
  in_split_ = true;
}

void DatasetWriter::add(const uint8_t* images, const int64_t* labels, int64_t n, const std::string& origin,
                        int64_t first_index) {
  SMOE_ASSERT(in_split_, "add outside a split");
  const int64_t C = manifest_.shape[0], plane = manifest_.shape[1] * manifest_.shape[2];
  const int64_t img = C * plane;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = labels[i];
    SMOE_CHECK(y >= 0 && y < manifest_.num_classes, "{}: label {} of sample {} is outside [0, {})", origin, y,
               first_index + i, manifest_.num_classes);
    split_.class_counts[static_cast<size_t>(y)]++;
    const uint8_t* p = images + i * img;
    for (int64_t c = 0; c < C; ++c) {
      uint64_t s = 0, s2 = 0;
      for (int64_t k = 0; k < plane; ++k) {
        const uint64_t v = p[c * plane + k];
        s += v;
        s2 += v * v;
      }
      sum_[static_cast<size_t>(c)] += s;
      sumsq_[static_cast<size_t>(c)] += s2;
    }
    images_.insert(images_.end(), p, p + img);
    labels_.push_back(y);
    split_.count++;
    if (static_cast<int64_t>(labels_.size()) == options_.shard_size) flush_shard();
  }
}

void DatasetWriter::flush_shard() {
  if (labels_.empty()) return;
  const int64_t n = static_cast<int64_t>(labels_.size());
  data::ShardInfo sh;
  sh.file = fmt::format("{}-{:05d}.h5", split_.name, split_.shards.size());
  sh.offset = split_.count - n;
  sh.count = n;
  const std::string path = (fs::path(dir_->temp()) / sh.file).string();
  data::write_shard(path, images_.data(), labels_.data(), n, manifest_.shape, options_.shard);
  sh.sha256 = sha256_file(path);
  sh.bytes = static_cast<int64_t>(fs::file_size(path));
  split_.shards.push_back(sh);
  images_.clear();
  labels_.clear();
}

void DatasetWriter::end_split() {
  SMOE_ASSERT(in_split_, "end_split outside a split");
  flush_shard();
  SMOE_CHECK(split_.count > 0, "split '{}' has no samples", split_.name);
  const double per_channel = static_cast<double>(split_.count) * manifest_.shape[1] * manifest_.shape[2];
  for (size_t c = 0; c < sum_.size(); ++c) {
    const double mean = static_cast<double>(sum_[c]) / per_channel / 255.0;
    const double var = static_cast<double>(sumsq_[c]) / per_channel / (255.0 * 255.0) - mean * mean;
    split_.mean.push_back(mean);
    split_.std.push_back(std::sqrt(std::max(var, 0.0)));
  }
  manifest_.splits.push_back(std::move(split_));
  in_split_ = false;
}

data::Manifest DatasetWriter::finish() {
  SMOE_ASSERT(!in_split_, "finish inside a split");
  SMOE_CHECK(!manifest_.splits.empty(), "no samples were converted");
  manifest_.save(dir_->temp());
  dir_->commit(options_.force);
  return manifest_;
}

}  // namespace smoe::data_tools
