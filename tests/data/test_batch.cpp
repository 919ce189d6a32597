#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/expect_error.h"
#include "common/make_dataset.h"
#include "common/temp_dir.h"
#include "data/batch.h"
#include "data/sampler.h"

namespace smoe::data {
namespace {

TEST(Batch, NormalisesWithTheTrainStatistics) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  auto ds = Dataset::open(tmp / "ds", "test");
  Batch b = make_batch(*ds, {3, 1}, Transform{});
  ASSERT_EQ(b.images.sizes(), (at::IntArrayRef{2, 1, 8, 8}));
  EXPECT_EQ(b.labels[0].item<int64_t>(), 3);
  EXPECT_EQ(b.ids[1].item<int64_t>(), 1);
  const double mean = ds->mean()[0], sd = ds->stddev()[0];
  EXPECT_NEAR(b.images[0][0][2][5].item<float>(), (testing::pixel_value(3, 0, 2, 5) / 255.0 - mean) / sd, 1e-5);
}

TEST(Batch, AugmentationIsAShiftAndFlipDrawnPerSample) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  auto ds = Dataset::open(tmp / "ds", "train");
  Transform t;
  t.augment = true;
  t.crop_padding = 2;
  t.hflip = true;
  t.seed = 99;
  Batch plain = make_batch(*ds, {5, 6, 7, 8, 9, 10, 11, 12}, Transform{});
  Batch a = make_batch(*ds, {5, 6, 7, 8, 9, 10, 11, 12}, t);
  Batch again = make_batch(*ds, {12, 5}, t);  // other batch composition, same draws per sample
  EXPECT_TRUE(at::equal(a.images[0], again.images[1]));
  EXPECT_TRUE(at::equal(a.images[7], again.images[0]));
  EXPECT_FALSE(at::equal(a.images, plain.images));
  // Each augmented image equals the plain one shifted by at most 2 pixels, maybe flipped.
  const float pad = static_cast<float>(-ds->mean()[0] / ds->stddev()[0]);
  for (int i = 0; i < 8; ++i) {
    bool found = false;
    for (int flip = 0; flip < 2 && !found; ++flip)
      for (int dy = -2; dy <= 2 && !found; ++dy)
        for (int dx = -2; dx <= 2 && !found; ++dx) {
          at::Tensor src = plain.images[i][0];
          if (flip) src = src.flip({1});
          at::Tensor expect = at::full({8, 8}, pad);
          for (int y = 0; y < 8; ++y)
            for (int x = 0; x < 8; ++x) {
              int sy = y + dy, sx = x + dx;
              if (sy >= 0 && sy < 8 && sx >= 0 && sx < 8) expect[y][x] = src[sy][sx];
            }
          found = at::allclose(a.images[i][0], expect);
        }
    EXPECT_TRUE(found) << "sample " << i;
  }
}

TEST(BatchLoader, PrefetchedBatchesEqualSynchronousOnes) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  std::shared_ptr<const Dataset> ds = Dataset::open(tmp / "ds", "train");
  auto batches = make_batches(permutation(ds->size(), 3), 16, false);
  BatchLoader sync(ds, batches, Transform{}, 0), async(ds, batches, Transform{}, 3);
  size_t n = 0;
  while (auto b = sync.next()) {
    auto c = async.next();
    ASSERT_TRUE(c.has_value());
    EXPECT_TRUE(at::equal(b->images, c->images));
    EXPECT_TRUE(at::equal(b->ids, c->ids));
    ++n;
  }
  EXPECT_FALSE(async.next().has_value());
  EXPECT_EQ(n, batches.size());
}

TEST(BatchLoader, LoaderThreadErrorsReachTheCaller) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  std::shared_ptr<const Dataset> ds = Dataset::open(tmp / "ds", "train");
  BatchLoader loader(ds, {{1, 2}, {3, 1000}}, Transform{}, 2);
  EXPECT_TRUE(loader.next().has_value());
  EXPECT_ERROR(loader.next(), "sample id 1000 outside split 'train'");
}

TEST(BatchLoader, StopsCleanlyWhenAbandoned) {
  testing::TempDir tmp;
  testing::make_dataset(tmp / "ds");
  std::shared_ptr<const Dataset> ds = Dataset::open(tmp / "ds", "train");
  BatchLoader loader(ds, make_batches(permutation(100, 1), 4, false), Transform{}, 2);
  EXPECT_TRUE(loader.next().has_value());
}

}  // namespace
}  // namespace smoe::data
