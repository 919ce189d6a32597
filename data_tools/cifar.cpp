// CIFAR-10 / CIFAR-100 binary versions: records of label byte(s) followed by
// 3072 pixel bytes (1024 red, 1024 green, 1024 blue; rows of 32), i.e. already
// [C, H, W]. CIFAR-10: data_batch_1..5.bin and test_batch.bin (one label);
// CIFAR-100: train.bin and test.bin (coarse label, then fine label).
#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data_tools/converters.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {
namespace {

constexpr int64_t kPixels = 3 * 32 * 32;

std::vector<std::string> read_names(const fs::path& path, int expected) {
  std::vector<std::string> names;
  if (fs::exists(path)) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) names.push_back(line);
      SMOE_CHECK(data::is_valid_utf8(line), "{}: line {} is not valid UTF-8", path.string(), names.size());
    }
    SMOE_CHECK(static_cast<int>(names.size()) == expected, "{}: {} class names, expected {}", path.string(),
               names.size(), expected);
    return names;
  }
  for (int i = 0; i < expected; ++i) names.push_back(std::to_string(i));
  return names;
}

struct Records {
  std::string path;
  std::string bytes;
  int64_t count = 0;
};

Records read_records(const fs::path& path, int64_t record) {
  SMOE_CHECK(fs::exists(path), "missing {}", path.string());
  Records r;
  r.path = path.string();
  r.bytes = read_file(r.path);
  SMOE_CHECK(!r.bytes.empty(), "{}: empty file", r.path);
  SMOE_CHECK(static_cast<int64_t>(r.bytes.size()) % record == 0,
             "{}: truncated: {} bytes is not a whole number of {}-byte records", r.path, r.bytes.size(), record);
  r.count = static_cast<int64_t>(r.bytes.size()) / record;
  return r;
}

}  // namespace

data::Manifest convert_cifar(const std::string& src, const std::string& out, const ConvertOptions& options,
                             int classes) {
  SMOE_CHECK(fs::is_directory(src), "source folder {} does not exist", src);
  const bool c100 = classes == 100;
  SMOE_CHECK(!c100 || options.cifar100_labels == "fine" || options.cifar100_labels == "coarse",
             "--cifar100-labels must be fine or coarse, got '{}'", options.cifar100_labels);
  const bool coarse = c100 && options.cifar100_labels == "coarse";
  const int64_t label_bytes = c100 ? 2 : 1;
  const int64_t record = label_bytes + kPixels;
  const int num_classes = coarse ? 20 : classes;

  std::vector<std::pair<std::string, std::vector<std::string>>> splits;
  if (c100) {
    splits = {{"train", {"train.bin"}}, {"test", {"test.bin"}}};
  } else {
    splits = {
        {"train", {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}},
        {"test", {"test_batch.bin"}}};
  }
  std::vector<std::string> names =
      c100 ? read_names(fs::path(src) / (coarse ? "coarse_label_names.txt" : "fine_label_names.txt"), num_classes)
           : read_names(fs::path(src) / "batches.meta.txt", num_classes);

  // Read and check every file first.
  std::vector<std::vector<Records>> data;
  for (const auto& [split, files] : splits) {
    data.emplace_back();
    for (const auto& f : files) data.back().push_back(read_records(fs::path(src) / f, record));
  }
  DatasetWriter w(out, options.name.empty() ? (c100 ? "cifar100" : "cifar10") : options.name, {3, 32, 32}, names,
                  options.writer);
  std::vector<uint8_t> images;
  std::vector<int64_t> labels;
  for (size_t s = 0; s < splits.size(); ++s) {
    w.begin_split(splits[s].first);
    for (const auto& r : data[s]) {
      images.resize(static_cast<size_t>(r.count * kPixels));
      labels.resize(static_cast<size_t>(r.count));
      const auto* p = reinterpret_cast<const uint8_t*>(r.bytes.data());
      for (int64_t i = 0; i < r.count; ++i) {
        const uint8_t* rec = p + i * record;
        labels[static_cast<size_t>(i)] = c100 ? rec[coarse ? 0 : 1] : rec[0];
        std::copy(rec + label_bytes, rec + record, images.begin() + i * kPixels);
      }
      w.add(images.data(), labels.data(), r.count, r.path);
    }
    w.end_split();
  }
  w.set_source(
      {{"format", c100 ? "cifar100-binary" : "cifar10-binary"}, {"labels", c100 ? options.cifar100_labels : "label"}});
  return w.finish();
}

}  // namespace smoe::data_tools
