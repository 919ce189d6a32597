#include <gtest/gtest.h>

#include <filesystem>

#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"
#include "core/hash.h"
#include "core/rng.h"

namespace fs = std::filesystem;

namespace smoe {
namespace {

size_t entries(const std::string& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(AtomicFile, WritesAndReplacesWithoutLeftovers) {
  testing::TempDir tmp;
  write_file_atomic(tmp / "a.json", "first");
  write_file_atomic(tmp / "a.json", "second");
  EXPECT_EQ(read_file(tmp / "a.json"), "second");
  EXPECT_EQ(entries(tmp.path()), 1u);
}

TEST(AtomicFile, UncommittedPathLeavesNothingAndTargetUntouched) {
  testing::TempDir tmp;
  write_file_atomic(tmp / "keep", "old");
  {
    AtomicPath p(tmp / "keep");
    write_file_atomic(p.temp(), "new but abandoned");
  }
  EXPECT_EQ(read_file(tmp / "keep"), "old");
  EXPECT_EQ(entries(tmp.path()), 1u);
}

TEST(AtomicDir, RefusesExistingTargetUnlessReplacing) {
  testing::TempDir tmp;
  fs::create_directory(tmp / "out");
  write_file_atomic(tmp / "out/old.txt", "old");
  {
    AtomicDir d(tmp / "out");
    write_file_atomic(fs::path(d.temp()) / "new.txt", "new");
    EXPECT_ERROR(d.commit(false), "already exists (use --force to replace it)");
  }
  EXPECT_TRUE(fs::exists(tmp / "out/old.txt"));
  EXPECT_EQ(entries(tmp.path()), 1u);  // the temporary folder is gone
  {
    AtomicDir d(tmp / "out");
    write_file_atomic(fs::path(d.temp()) / "new.txt", "new");
    d.commit(true);
  }
  EXPECT_FALSE(fs::exists(tmp / "out/old.txt"));
  EXPECT_EQ(read_file(tmp / "out/new.txt"), "new");
  EXPECT_EQ(entries(tmp.path()), 1u);
}

TEST(ReadFile, MissingFileNamesIt) { EXPECT_ERROR(read_file("/nonexistent/file.bin"), "/nonexistent/file.bin"); }

TEST(Hash, Sha256KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  testing::TempDir tmp;
  write_file_atomic(tmp / "f", "abc");
  EXPECT_EQ(sha256_file(tmp / "f"), sha256_hex("abc"));
}

TEST(Rng, DerivedSeedsDependOnEveryPart) {
  uint64_t a = derive_seed(1, "experts", {3, 0});
  EXPECT_EQ(a, derive_seed(1, "experts", {3, 0}));
  EXPECT_NE(a, derive_seed(2, "experts", {3, 0}));
  EXPECT_NE(a, derive_seed(1, "base", {3, 0}));
  EXPECT_NE(a, derive_seed(1, "experts", {4, 0}));
  EXPECT_NE(a, derive_seed(1, "experts", {3, 1}));
  EXPECT_NE(derive_seed(1, "experts", {0, 1}), derive_seed(1, "experts", {1, 0}));
}

}  // namespace
}  // namespace smoe
