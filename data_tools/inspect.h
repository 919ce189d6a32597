// `smoe-data inspect` and `smoe-data verify`.
#pragma once

#include <string>

namespace smoe::data_tools {

// A human-readable summary of a dataset folder: splits, counts, shape,
// classes with their histogram, per-channel mean/std.
std::string inspect(const std::string& dir);

struct VerifyReport {
  int64_t shards = 0;
  int64_t samples = 0;
  int64_t bytes = 0;
};

// Re-reads every shard: file checksum against the manifest, HDF5 structure,
// shapes, dtypes, sample counts, labels in range and class counts. Throws
// smoe::Error naming the first bad file and what is wrong.
VerifyReport verify(const std::string& dir);

}  // namespace smoe::data_tools
