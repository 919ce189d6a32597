// The HDF5 file `smoe predict` writes: one row per input sample, every rank
// writing its own rows at their offsets (no gather, as the embed stage
// does). The datasets are contiguous and allocated when the file is
// created, so that each sits at a fixed byte offset that every rank can
// pwrite into; rank 0 creates the file and writes the attributes. Datasets:
//
//   prediction  int64 [N]     the predicted class
//   expert      int64 [N]     the expert with the largest weight (-1: none ran)
//   early_exit  uint8 [N]     1: answered by the base model alone (anytime)
//   label       int64 [N]     the input's label (when it has labels)
//   probs       float32 [N, C] the class probabilities (with --probs)
//
// Torch-free; little-endian hosts (x86-64, aarch64).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace smoe::data {

struct PredictionLayout {
  int64_t rows = 0;
  int64_t classes = 0;
  bool labels = false;
  bool probs = false;
};

// The byte offset of each dataset in the file ("prediction", ...).
using DatasetOffsets = std::map<std::string, int64_t>;

// Rows [first, first + n) of each dataset, in the layout's order.
struct PredictionRows {
  int64_t first = 0;
  std::vector<int64_t> prediction, expert, label;
  std::vector<uint8_t> early_exit;
  std::vector<float> probs;  // n * classes
};

// Rank 0: creates `path` (replacing it) with every dataset allocated.
DatasetOffsets create_prediction_file(const std::string& path, const PredictionLayout& layout);
// Any rank: writes `rows` at their offsets and syncs them to disk.
void write_prediction_rows(const std::string& path, const PredictionLayout& layout, const DatasetOffsets& offsets,
                           const PredictionRows& rows);
// Rank 0, after every rank has written: the file's attributes.
void set_prediction_attributes(const std::string& path, const std::map<std::string, std::string>& text,
                               const std::map<std::string, double>& numbers);

// Offsets as text and back (to broadcast them).
std::string offsets_text(const DatasetOffsets& offsets);
DatasetOffsets offsets_from_text(const std::string& text);

}  // namespace smoe::data
