// Is a shard still the file its manifest describes? A shard replaced or
// edited after `smoe-data convert` wrote the manifest would silently train on
// other data (and break exact resume), so runs check every shard they read
// against the manifest before the first stage starts (`data.verify`):
//   hash  the file's SHA-256 (the default); a file whose size and
//         modification time match a cache entry of an earlier check is not
//         re-read, so a resumed run pays only for files that changed;
//   size  the file's size only (datasets too large to hash on every new run);
//   off   nothing.
// Torch-free; the cache is a small JSON file kept in the run folder.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "data/data_options.h"
#include "data/manifest.h"

namespace smoe::data {

// VerifyMode (hash, size, off) is declared with the data.verify key, in
// data/data_options.h.

// What an earlier check saw of a file that matched its manifest.
struct FileStamp {
  int64_t bytes = 0;
  int64_t mtime_ns = 0;
  std::string sha256;
};
// Keyed by the shard's absolute path.
using VerifyCache = std::map<std::string, FileStamp>;

// Reads a cache written by save_verify_cache; a missing or unreadable file
// gives an empty cache (it is only a shortcut, never trusted for more).
VerifyCache load_verify_cache(const std::string& path);
// Writes the cache atomically.
void save_verify_cache(const VerifyCache& cache, const std::string& path);

// Checks every shard of split `split` in dataset folder `dir` whose samples
// lie below `limit` (0 = all). Throws one line naming the first shard that is
// missing, has another size, or another checksum than the manifest says.
// Returns the number of bytes hashed (0 when the cache answered); `cache`
// gains an entry for every shard that matched.
int64_t verify_split(const std::string& dir, const Manifest& manifest, const std::string& split, int64_t limit,
                     VerifyMode mode, VerifyCache& cache);

}  // namespace smoe::data
