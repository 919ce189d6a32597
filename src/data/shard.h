// One HDF5 shard: /images uint8 [n, C, H, W] chunked by `chunk_images`
// images, /labels int64 [n]. Written deterministically (no timestamps), so
// the same input gives byte-identical files. Every HDF5 call is checked and
// its failure reported with the file, the operation and HDF5's own message.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace smoe::data {

struct ShardWriteOptions {
  int64_t chunk_images = 256;
  int gzip_level = 0;  // 0 = uncompressed, 1..9 = deflate level
};

// Writes a complete shard at `path` (not atomically: callers write into a
// temporary folder or through AtomicPath).
void write_shard(const std::string& path, const uint8_t* images, const int64_t* labels, int64_t count,
                 const std::vector<int64_t>& shape, const ShardWriteOptions& options);

// The HDF5 library's version, e.g. "1.10.8".
std::string hdf5_version();

class ShardReader {
 public:
  // Opens and checks the shard's structure: datasets present, dtypes, ranks,
  // image shape equal to `shape` and as many labels as images. `cache_bytes`
  // sizes the chunk cache for random reads (0 = HDF5's default).
  ShardReader(const std::string& path, const std::vector<int64_t>& shape, size_t cache_bytes = 0);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  int64_t count() const { return count_; }
  const std::string& path() const { return path_; }

  // Every image (count * C*H*W bytes) / every label.
  void read_images(uint8_t* out) const;
  void read_labels(int64_t* out) const;
  // Images at rows[0..n) (any order), one hyperslab read per row; with a
  // chunk cache that holds the shard's chunks, random access stays fast even
  // for gzip, and the cache never holds more than `cache_bytes`.
  void read_rows(const int64_t* rows, size_t n, uint8_t* out) const;

 private:
  std::string path_;
  std::vector<int64_t> shape_;
  int64_t count_ = 0;
  int64_t file_ = -1;
  int64_t images_ = -1;
  int64_t labels_ = -1;
};

}  // namespace smoe::data
