#include "data/integrity.h"

#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hash.h"

namespace smoe::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Size and modification time (nanoseconds), or nullopt when the file is not
// a readable regular file.
std::optional<FileStamp> stamp_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  FileStamp s;
  s.bytes = static_cast<int64_t>(st.st_size);
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return s;
}

}  // namespace

VerifyCache load_verify_cache(const std::string& path) {
  VerifyCache cache;
  if (!fs::exists(path)) return cache;
  try {
    const json j = json::parse(read_file(path));
    for (const auto& [file, e] : j.items())
      cache[file] =
          FileStamp{e.at("bytes").get<int64_t>(), e.at("mtime_ns").get<int64_t>(), e.at("sha256").get<std::string>()};
  } catch (const std::exception&) {
    cache.clear();  // a damaged cache only costs a re-check
  }
  return cache;
}

void save_verify_cache(const VerifyCache& cache, const std::string& path) {
  json j = json::object();
  for (const auto& [file, s] : cache) j[file] = {{"bytes", s.bytes}, {"mtime_ns", s.mtime_ns}, {"sha256", s.sha256}};
  write_file_atomic(path, j.dump(1) + "\n");
}

int64_t verify_split(const std::string& dir, const Manifest& manifest, const std::string& split, int64_t limit,
                     VerifyMode mode, VerifyCache& cache) {
  if (mode == VerifyMode::off) return 0;
  const SplitInfo& s = manifest.split(split);
  int64_t hashed = 0;
  for (const auto& sh : s.shards) {
    if (limit > 0 && sh.offset >= limit) break;
    const std::string path = fs::absolute(fs::path(dir) / sh.file).lexically_normal().string();
    const auto st = stamp_of(path);
    SMOE_CHECK(st.has_value(), "{}: shard named in the manifest is missing or not a file", path);
    SMOE_CHECK(sh.bytes == 0 || st->bytes == sh.bytes,
               "{}: shard changed after its manifest was written ({} bytes, the manifest says {}); re-run smoe-data "
               "convert",
               path, st->bytes, sh.bytes);
    if (mode == VerifyMode::size) continue;
    auto it = cache.find(path);
    if (it != cache.end() && it->second.bytes == st->bytes && it->second.mtime_ns == st->mtime_ns &&
        it->second.sha256 == sh.sha256)
      continue;
    const std::string sum = sha256_file(path);
    hashed += st->bytes;
    SMOE_CHECK(sum == sh.sha256,
               "{}: shard changed after its manifest was written (sha256 {}, the manifest says {}); re-run smoe-data "
               "convert",
               path, sum.substr(0, 12), sh.sha256.substr(0, 12));
    cache[path] = FileStamp{st->bytes, st->mtime_ns, sum};
  }
  return hashed;
}

}  // namespace smoe::data
