#include "data/batch.h"

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/rng.h"

namespace smoe::data {

PixelNormalization pixel_normalization(const Manifest& m) {
  const auto& stats = m.stats_split();
  const size_t C = stats.mean.size();
  PixelNormalization n{std::vector<float>(C), std::vector<float>(C)};
  for (size_t c = 0; c < C; ++c) {
    const double sd = stats.std[c] > 0 ? stats.std[c] : 1.0;
    n.scale[c] = static_cast<float>(1.0 / (255.0 * sd));
    n.shift[c] = static_cast<float>(-stats.mean[c] / sd);
  }
  return n;
}

Batch make_batch(const Dataset& ds, const std::vector<int64_t>& ids, const Transform& t) {
  const int64_t B = static_cast<int64_t>(ids.size());
  const int64_t C = ds.shape()[0], H = ds.shape()[1], W = ds.shape()[2];
  const int64_t img = C * H * W;
  std::vector<uint8_t> raw(static_cast<size_t>(B * img));
  ds.read(ids.data(), ids.size(), raw.data());

  Batch b;
  b.images = at::empty({B, C, H, W}, at::kFloat);
  b.labels = at::empty({B}, at::kLong);
  b.ids = at::empty({B}, at::kLong);
  float* out = b.images.data_ptr<float>();
  int64_t* lab = b.labels.data_ptr<int64_t>();
  int64_t* idp = b.ids.data_ptr<int64_t>();

  const auto [scale, shift] = pixel_normalization(ds.manifest());
  const int64_t pad = t.augment ? t.crop_padding : 0;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t id = ids[static_cast<size_t>(i)];
    idp[i] = id;
    lab[i] = ds.labels()[static_cast<size_t>(id)];
    int64_t dy = 0, dx = 0;
    bool flip = false;
    if (t.augment) {
      uint64_t r = derive_seed(t.seed, "augment", {static_cast<uint64_t>(id)});
      if (pad > 0) {
        dy = static_cast<int64_t>(r % static_cast<uint64_t>(2 * pad + 1)) - pad;
        dx = static_cast<int64_t>((r >> 16) % static_cast<uint64_t>(2 * pad + 1)) - pad;
      }
      flip = t.hflip && ((r >> 40) & 1);
    }
    const uint8_t* src = raw.data() + i * img;
    float* dst = out + i * img;
    for (int64_t c = 0; c < C; ++c) {
      const float s = scale[static_cast<size_t>(c)], z = shift[static_cast<size_t>(c)];
      for (int64_t y = 0; y < H; ++y) {
        const int64_t sy = y + dy;
        float* row = dst + (c * H + y) * W;
        if (sy < 0 || sy >= H) {
          // Padding pixels are zeros of the raw image, i.e. `shift` once normalised.
          for (int64_t x = 0; x < W; ++x) row[x] = z;
          continue;
        }
        const uint8_t* srow = src + (c * H + sy) * W;
        for (int64_t x = 0; x < W; ++x) {
          int64_t sx = (flip ? W - 1 - x : x) + dx;
          row[x] = (sx < 0 || sx >= W) ? z : static_cast<float>(srow[sx]) * s + z;
        }
      }
    }
  }
  return b;
}

namespace {

Batch made(const Dataset& ds, const std::vector<int64_t>& ids, const Transform& t, bool pin) {
  Batch b = make_batch(ds, ids, t);
  if (pin) {
    b.images = b.images.pin_memory();
    b.labels = b.labels.pin_memory();
  }
  return b;
}

}  // namespace

BatchLoader::BatchLoader(std::shared_ptr<const Dataset> ds, std::vector<std::vector<int64_t>> batches, Transform t,
                         int64_t prefetch, bool pin_memory)
    : ds_(std::move(ds)),
      batches_(std::move(batches)),
      transform_(t),
      prefetch_(static_cast<size_t>(prefetch)),
      pin_memory_(pin_memory) {
  if (prefetch_ > 0 && !batches_.empty()) worker_ = std::thread([this] { run(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void BatchLoader::run() {
  try {
    for (size_t i = 0; i < batches_.size(); ++i) {
      Batch b = made(*ds_, batches_[i], transform_, pin_memory_);
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || ready_.size() < prefetch_; });
      if (stop_) return;
      ready_.push_back(std::move(b));
      ++produced_;
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

std::optional<Batch> BatchLoader::next() {
  if (prefetch_ == 0) {
    if (next_ >= batches_.size()) return std::nullopt;
    return made(*ds_, batches_[next_++], transform_, pin_memory_);
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !ready_.empty() || error_ || produced_ == batches_.size(); });
  if (!ready_.empty()) {
    Batch b = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
    return b;
  }
  if (error_) std::rethrow_exception(error_);
  return std::nullopt;
}

}  // namespace smoe::data
