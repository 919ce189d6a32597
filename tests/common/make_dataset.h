// Small synthetic dataset folders for tests: pixel (c, y, x) of sample i of a
// split is pixel_value(i, c, y, x), its label is i % classes.
#pragma once

#include <string>
#include <vector>

#include "data_tools/dataset_writer.h"

namespace smoe::testing {

inline uint8_t pixel_value(int64_t i, int64_t c, int64_t y, int64_t x) {
  return static_cast<uint8_t>((i * 7 + c * 13 + y * 3 + x) % 256);
}

struct SyntheticSpec {
  int64_t train = 100;
  int64_t test = 40;
  std::vector<int64_t> shape = {1, 8, 8};
  int64_t classes = 4;
  int64_t shard_size = 32;
  int64_t chunk = 8;
  int gzip = 1;
};

inline void make_dataset(const std::string& dir, const SyntheticSpec& spec = {}) {
  data_tools::WriterOptions o;
  o.shard_size = spec.shard_size;
  o.shard.chunk_images = spec.chunk;
  o.shard.gzip_level = spec.gzip;
  std::vector<std::string> names;
  for (int64_t c = 0; c < spec.classes; ++c) names.push_back("class" + std::to_string(c));
  data_tools::DatasetWriter w(dir, "synthetic", spec.shape, names, o);
  const int64_t C = spec.shape[0], H = spec.shape[1], W = spec.shape[2];
  for (auto [split, n] : {std::pair<std::string, int64_t>{"train", spec.train}, {"test", spec.test}}) {
    w.begin_split(split);
    std::vector<uint8_t> img(static_cast<size_t>(C * H * W));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) img[static_cast<size_t>((c * H + y) * W + x)] = pixel_value(i, c, y, x);
      int64_t label = i % spec.classes;
      w.add(img.data(), &label, 1, split);
    }
    w.end_split();
  }
  w.finish();
}

}  // namespace smoe::testing
