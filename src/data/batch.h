// From sample ids to training tensors: normalised float images (optionally
// augmented with a random crop after zero padding and a horizontal flip),
// int64 labels, and the ids themselves; a loader prepares the next batches on
// a background thread (threads, not forked workers: libgomp is not fork-safe).
#pragma once

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "data/dataset.h"

namespace smoe::data {

// How a stored pixel x (0..255) becomes a network input, per channel c, in
// float: y = x * scale[c] + shift[c], scale = 1 / (255 std), shift =
// -mean / std, from the manifest's statistics of its statistics split
// (make_batch's, and an exported model's, models/moe_export.h).
struct PixelNormalization {
  std::vector<float> scale, shift;
};
PixelNormalization pixel_normalization(const Manifest& manifest);

struct Transform {
  bool augment = false;
  int64_t crop_padding = 0;
  bool hflip = false;
  // Augmentation of sample `id` is drawn from derive(seed, id): callers pass
  // a seed derived from (run seed, stage, expert, epoch), so the draws do not
  // depend on batch composition or on the rank.
  uint64_t seed = 0;
};

struct Batch {
  at::Tensor images;  // float32 [B, C, H, W], (x / 255 - mean) / std
  at::Tensor labels;  // int64 [B]
  at::Tensor ids;     // int64 [B] global sample ids
};

// Builds one batch synchronously.
Batch make_batch(const Dataset& ds, const std::vector<int64_t>& ids, const Transform& t);

// Serves `batches` in order; with prefetch > 0 a background thread keeps up to
// `prefetch` batches ready. Errors on the loader thread are rethrown by next().
class BatchLoader {
 public:
  // pin_memory: batches in page-locked host memory (for a CUDA device: their
  // copies to it then run asynchronously, overlapping the compute; see
  // train/tensors.h's to_device).
  BatchLoader(std::shared_ptr<const Dataset> ds, std::vector<std::vector<int64_t>> batches, Transform t,
              int64_t prefetch, bool pin_memory = false);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  size_t size() const { return batches_.size(); }
  // The next batch, or nullopt after the last.
  std::optional<Batch> next();

 private:
  void run();

  std::shared_ptr<const Dataset> ds_;
  std::vector<std::vector<int64_t>> batches_;
  Transform transform_;
  size_t prefetch_;
  bool pin_memory_ = false;
  size_t next_ = 0;  // next batch handed out (synchronous mode)

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  size_t produced_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;
};

}  // namespace smoe::data
