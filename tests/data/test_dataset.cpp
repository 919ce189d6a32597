#include <gtest/gtest.h>

#include <malloc.h>

#include <filesystem>

#include "common/expect_error.h"
#include "common/make_dataset.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "data/shard.h"

namespace fs = std::filesystem;

namespace smoe::data {
namespace {

// Bytes malloc has handed out and not taken back (mmapped blocks included).
size_t malloc_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

TEST(Manifest, DescribesShardsWithOffsetsAndStatistics) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  auto m = Manifest::load(tmp / "ds");
  EXPECT_EQ(m.name, "synthetic");
  EXPECT_EQ(m.shape, (std::vector<int64_t>{1, 8, 8}));
  const auto& train = m.split("train");
  EXPECT_EQ(train.count, 100);
  ASSERT_EQ(train.shards.size(), 4u);  // 32 + 32 + 32 + 4
  EXPECT_EQ(train.shards[3].offset, 96);
  EXPECT_EQ(train.shards[3].count, 4);
  EXPECT_EQ(train.shard_of(0), 0u);
  EXPECT_EQ(train.shard_of(31), 0u);
  EXPECT_EQ(train.shard_of(32), 1u);
  EXPECT_EQ(train.shard_of(99), 3u);
  EXPECT_EQ(train.class_counts, (std::vector<int64_t>{25, 25, 25, 25}));
  // mean of pixel_value over the split, scaled to [0, 1]
  double sum = 0;
  for (int i = 0; i < 100; ++i)
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) sum += testing::pixel_value(i, 0, y, x);
  EXPECT_NEAR(train.mean[0], sum / (100 * 64) / 255.0, 1e-12);
  EXPECT_ERROR(m.split("validation"), "dataset 'synthetic' has no split 'validation' (it has: train, test)");
}

TEST(Manifest, RejectsMalformedFiles) {
  testing::TempDir tmp;
  EXPECT_ERROR(Manifest::load(tmp / "nope"), "dataset folder");
  fs::create_directory(tmp / "empty");
  EXPECT_ERROR(Manifest::load(tmp / "empty"), "manifest.json is missing");
  testing::make_dataset(tmp / "ds");
  std::string text = read_file(tmp / "ds/manifest.json");
  write_file_atomic(tmp / "ds/manifest.json", text.substr(0, text.size() / 2));
  EXPECT_ERROR(Manifest::load(tmp / "ds"), "manifest.json: invalid JSON");
  auto j = nlohmann::json::parse(text);
  j["splits"]["train"]["shards"][1]["offset"] = 5;
  EXPECT_ERROR(Manifest::from_json(j, "m.json"), "m.json split 'train': shard train-00001.h5 has offset 5");
  // Found by fuzz_manifest: a float where an integer belongs (its cast would overflow).
  auto k = nlohmann::json::parse(text);
  k["chunk_images"] = 3e120;
  EXPECT_ERROR(Manifest::from_json(k, "m.json"), "m.json: field 'chunk_images' must hold integers");
  k = nlohmann::json::parse(text);
  k["image_shape"] = {1, 28.5, 28};
  EXPECT_ERROR(Manifest::from_json(k, "m.json"), "m.json: field 'image_shape' must hold integers");
  // and (also found by fuzzing) JSON that nlohmann parses into a number out of range
  write_file_atomic(tmp / "ds/manifest.json", "{\"chunk_images\": 1" + std::string(400, '0') + "}");
  EXPECT_ERROR(Manifest::load(tmp / "ds"), "manifest.json: invalid JSON");
}

class Storage : public ::testing::TestWithParam<StorageMode> {};

TEST_P(Storage, ReadsImagesByGlobalIdInAnyOrder) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  DatasetOptions o;
  o.storage = GetParam();
  auto ds = Dataset::open(tmp / "ds", "train", o);
  EXPECT_EQ(ds->in_memory(), GetParam() == StorageMode::memory);
  EXPECT_EQ(ds->size(), 100);
  std::vector<int64_t> ids = {99, 0, 33, 32, 31, 64, 33};
  std::vector<uint8_t> out(ids.size() * 64);
  ds->read(ids.data(), ids.size(), out.data());
  for (size_t k = 0; k < ids.size(); ++k) {
    EXPECT_EQ(ds->labels()[ids[k]], ids[k] % 4);
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x)
        ASSERT_EQ(out[k * 64 + y * 8 + x], testing::pixel_value(ids[k], 0, y, x)) << "id " << ids[k];
  }
  int64_t bad = 100;
  EXPECT_ERROR(ds->read(&bad, 1, out.data()), "sample id 100 outside split 'train' of 100 samples");
}

INSTANTIATE_TEST_SUITE_P(MemoryAndStream, Storage, ::testing::Values(StorageMode::memory, StorageMode::stream));

TEST(Dataset, LimitKeepsTheFirstSamples) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  DatasetOptions o;
  o.limit = 40;
  auto ds = Dataset::open(tmp / "ds", "train", o);
  EXPECT_EQ(ds->size(), 40);
  std::vector<uint8_t> out(64);
  int64_t id = 39;
  ds->read(&id, 1, out.data());
  EXPECT_EQ(out[5], testing::pixel_value(39, 0, 0, 5));
}

// Symmetric label noise: about the requested share of the labels moves to
// another class, trusted samples never do, the true labels stay readable,
// and the same seed gives the same noise; a relabelled copy shares the images.
TEST(Dataset, LabelNoiseSparesTheTrustedSamplesAndRelabellingSharesTheImages) {
  testing::TempDir tmp;
  testing::SyntheticSpec spec;
  spec.train = 2000;
  testing::make_dataset(tmp / "ds", spec);
  DatasetOptions o;
  o.label_noise = 0.4;
  o.trusted_fraction = 0.1;
  o.noise_seed = 5;
  o.storage = StorageMode::stream;
  auto ds = Dataset::open(tmp / "ds", "train", o);
  int64_t flipped = 0, trusted = 0;
  for (int64_t i = 0; i < ds->size(); ++i) {
    const int64_t y = ds->labels()[static_cast<size_t>(i)], truth = ds->true_labels()[static_cast<size_t>(i)];
    EXPECT_EQ(truth, i % 4);
    EXPECT_TRUE(y >= 0 && y < 4);
    if (is_trusted(5, i, 0.1)) {
      ++trusted;
      EXPECT_EQ(y, truth) << "trusted sample " << i << " is noisy";
    } else {
      flipped += y != truth;
    }
  }
  EXPECT_NEAR(static_cast<double>(trusted) / 2000, 0.1, 0.03);
  EXPECT_NEAR(static_cast<double>(flipped) / static_cast<double>(2000 - trusted), 0.4, 0.04);
  EXPECT_EQ(Dataset::open(tmp / "ds", "train", o)->labels(), ds->labels());
  EXPECT_EQ(Dataset::open(tmp / "ds", "test", {})->true_labels(), Dataset::open(tmp / "ds", "test", {})->labels());

  auto re = ds->relabelled(std::vector<int64_t>(2000, 3));
  EXPECT_EQ(re->labels()[7], 3);
  EXPECT_EQ(re->true_labels(), ds->true_labels());
  std::vector<uint8_t> a(64), b(64);
  int64_t id = 1234;
  ds->read(&id, 1, a.data());
  re->read(&id, 1, b.data());
  EXPECT_EQ(a, b);
  EXPECT_ERROR(ds->relabelled({1, 2}), "relabelling split 'train' of 2000 samples with 2 labels");
  EXPECT_ERROR(ds->relabelled(std::vector<int64_t>(2000, 9)), "label 9 is outside [0, 4)");
}

TEST(Dataset, MissingOrDamagedShardIsNamed) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  fs::remove(tmp / "ds/train-00002.h5");
  EXPECT_ERROR(Dataset::open(tmp / "ds", "train"), "train-00002.h5 is missing");
  testing::make_dataset(tmp / "ds2");
  write_file_atomic(tmp / "ds2/train-00001.h5", "not hdf5 at all");
  EXPECT_ERROR(Dataset::open(tmp / "ds2", "train"), "train-00001.h5: not an HDF5 file");
}

TEST(Shard, StructureIsChecked) {
  testing::TempDir tmp;
  std::vector<uint8_t> images(3 * 2 * 4 * 4, 7);
  std::vector<int64_t> labels = {0, 1, 2};
  write_shard(tmp / "s.h5", images.data(), labels.data(), 3, {2, 4, 4}, {});
  ShardReader ok(tmp / "s.h5", {2, 4, 4});
  EXPECT_EQ(ok.count(), 3);
  EXPECT_ERROR(ShardReader(tmp / "s.h5", {1, 4, 4}), "/images has shape [3, 2, 4, 4], expected [n, 1, 4, 4]");
}

// Random reads from a compressed shard keep no more than the chunk cache
// asks for: 1 MiB chunks, a 1.5 MiB cache, every one of the 16 chunks read
// many times over. (HDF5 1.10 with preemption weight 1.0 kept every chunk
// it had inflated — 16 MiB here, the whole shard.)
TEST(Shard, RandomReadsStayWithinTheChunkCache) {
  testing::TempDir tmp;
  const int64_t n = 4096, img = 3 * 32 * 43;  // 16 chunks of 256 images of 4,128 bytes
  std::vector<uint8_t> images(static_cast<size_t>(n * img));
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  std::vector<int64_t> labels(static_cast<size_t>(n), 0);
  ShardWriteOptions o;
  o.chunk_images = 256;  // 1 MiB
  o.gzip_level = 1;
  write_shard(tmp / "s.h5", images.data(), labels.data(), n, {3, 32, 43}, o);
  ShardReader shard(tmp / "s.h5", {3, 32, 43}, 3 << 19);
  std::vector<uint8_t> out(static_cast<size_t>(img));
  const size_t before = malloc_in_use();
  for (int64_t i = 0; i < 400; ++i) {
    const int64_t row = (i * 389) % n;  // hops between chunks
    shard.read_rows(&row, 1, out.data());
    ASSERT_EQ(out[5], images[static_cast<size_t>(row * img + 5)]);
  }
  EXPECT_LT(malloc_in_use() - before, size_t{4} << 20) << "the chunk cache grew past its size";
}

TEST(Sampler, PermutationsAreSeededAndComplete) {
  auto p = permutation(1000, 42);
  EXPECT_EQ(p, permutation(1000, 42));
  EXPECT_NE(p, permutation(1000, 43));
  auto sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  auto c = chunk_aware_permutation(1024, 16, 4, 7);
  auto cs = c;
  std::sort(cs.begin(), cs.end());
  for (int i = 0; i < 1024; ++i) ASSERT_EQ(cs[i], i);
  // each window of 4 chunks (64 ids) touches at most 4 distinct chunks
  for (size_t w = 0; w + 64 <= c.size(); w += 64) {
    std::set<int64_t> chunks;
    for (size_t i = w; i < w + 64; ++i) chunks.insert(c[i] / 16);
    EXPECT_LE(chunks.size(), 4u);
  }
}

TEST(Sampler, WeightedSampleFollowsTheWeights) {
  std::vector<double> w = {0.0, 1.0, 3.0, 0.0};
  auto s = weighted_sample(w, 40000, 1);
  std::vector<int> counts(4);
  for (auto id : s) counts[static_cast<size_t>(id)]++;
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[3], 0);
  EXPECT_NEAR(counts[2] / 40000.0, 0.75, 0.01);
  EXPECT_ERROR(weighted_sample({0.0, 0.0}, 3, 1), "positive total weight");
}

TEST(Sampler, BatchesAndShares) {
  std::vector<int64_t> ids(10);
  std::iota(ids.begin(), ids.end(), 0);
  EXPECT_EQ(make_batches(ids, 4, false).size(), 3u);
  EXPECT_EQ(make_batches(ids, 4, true).size(), 2u);
  int64_t covered = 0;
  for (int r = 0; r < 3; ++r) {
    auto [b, e] = rank_range(10, r, 3);
    EXPECT_EQ(b, covered);
    EXPECT_GE(e - b, 3);
    covered = e;
  }
  EXPECT_EQ(covered, 10);
  EXPECT_EQ(round_robin(7, 1, 3), (std::vector<int64_t>{1, 4}));
}

}  // namespace
}  // namespace smoe::data
