// data/integrity.h: a shard changed after its manifest is caught before a run
// reads it, and the cache of earlier checks never hides a change.
#include "data/integrity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/expect_error.h"
#include "common/make_dataset.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"

namespace fs = std::filesystem;

namespace smoe::data {
namespace {

// Flips one byte in the middle of `path`, keeping its size.
void flip_byte(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  const auto middle = static_cast<std::streamoff>(fs::file_size(path) / 2);
  f.seekg(middle);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(middle);
  f.write(&c, 1);
}

struct Shards : ::testing::Test {
  testing::TempDir tmp;
  std::string dir;
  Manifest m;
  void SetUp() override {
    dir = tmp / "ds";
    testing::make_dataset(dir);
    m = Manifest::load(dir);
  }
  std::string shard(int i) const {
    return fs::absolute(fs::path(dir) / m.split("train").shards[static_cast<size_t>(i)].file).string();
  }
};

TEST_F(Shards, ManifestRecordsEachShardsSize) {
  for (const auto& sh : m.split("train").shards)
    EXPECT_EQ(sh.bytes, static_cast<int64_t>(fs::file_size(fs::path(dir) / sh.file))) << sh.file;
}

TEST_F(Shards, UntouchedShardsPassAndAreCachedByStamp) {
  VerifyCache cache;
  const int64_t hashed = verify_split(dir, m, "train", 0, VerifyMode::hash, cache);
  int64_t total = 0;
  for (const auto& sh : m.split("train").shards) total += sh.bytes;
  EXPECT_EQ(hashed, total);
  EXPECT_EQ(cache.size(), m.split("train").shards.size());
  // A second check, through a cache saved and read back, reads nothing.
  save_verify_cache(cache, tmp / "cache.json");
  VerifyCache again = load_verify_cache(tmp / "cache.json");
  EXPECT_EQ(verify_split(dir, m, "train", 0, VerifyMode::hash, again), 0);
}

TEST_F(Shards, ContentChangedWithSameSizeIsCaughtByHash) {
  VerifyCache cache;
  verify_split(dir, m, "train", 0, VerifyMode::hash, cache);
  flip_byte(shard(2));
  // The cache does not hide it: the file's modification time moved.
  EXPECT_ERROR(verify_split(dir, m, "train", 0, VerifyMode::hash, cache),
               shard(2) + ": shard changed after its manifest was written (sha256 ");
  // Size-only checking cannot see an edit that keeps the size (documented).
  EXPECT_NO_THROW(verify_split(dir, m, "train", 0, VerifyMode::size, cache));
  // A limit below the changed shard never reads it.
  EXPECT_NO_THROW(verify_split(dir, m, "train", 64, VerifyMode::hash, cache));
}

TEST_F(Shards, TruncatedOrMissingShardIsCaughtBySize) {
  fs::resize_file(shard(1), fs::file_size(shard(1)) - 10);
  VerifyCache cache;
  EXPECT_ERROR(verify_split(dir, m, "train", 0, VerifyMode::size, cache),
               shard(1) + ": shard changed after its manifest was written (");
  // 'off' checks nothing, not even that the files exist.
  fs::remove(shard(3));
  EXPECT_EQ(verify_split(dir, m, "train", 0, VerifyMode::off, cache), 0);
}

TEST_F(Shards, MissingShardNamed) {
  fs::remove(shard(3));
  VerifyCache cache;
  EXPECT_ERROR(verify_split(dir, m, "train", 0, VerifyMode::size, cache),
               shard(3) + ": shard named in the manifest is missing or not a file");
}

// data.verify is read into the enum by its name, printed back by it, and
// anything else is refused naming the key and the names.
TEST(VerifyMode, TheKeyReadsNamesAndRejectsOthers) {
  DataConfig c;
  auto table = options::table_of(c);
  EXPECT_EQ(c.verify, VerifyMode::hash);
  options::set(table, "verify=size", "--set");
  EXPECT_EQ(c.verify, VerifyMode::size);
  options::set(table, "verify=off", "--set");
  EXPECT_EQ(c.verify, VerifyMode::off);
  EXPECT_EQ(options::name(c.verify), "off");
  EXPECT_ERROR(options::set(table, "verify=md5", "--set"),
               "config key 'verify' (--set): expected one of hash | size | off, got 'md5'");
}

TEST(VerifyCache, DamagedCacheIsEmpty) {
  testing::TempDir tmp;
  write_file_atomic(tmp / "c.json", "{\"x\": {\"bytes\": \"many\"}}");
  EXPECT_TRUE(load_verify_cache(tmp / "c.json").empty());
  EXPECT_TRUE(load_verify_cache(tmp / "absent.json").empty());
}

}  // namespace
}  // namespace smoe::data
