#include "data_tools/inspect.h"

#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"
#include "data/manifest.h"
#include "data/shard.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {

std::string inspect(const std::string& dir) {
  auto m = data::Manifest::load(dir);
  std::ostringstream out;
  out << fmt::format("dataset     {} ({})\n", m.name, dir);
  out << fmt::format("image shape [{}] (C, H, W), uint8\n", fmt::join(m.shape, ", "));
  out << fmt::format("classes     {}\n", m.num_classes);
  out << fmt::format("storage     chunks of {} images, compression {}\n", m.chunk_images, m.compression);
  for (const auto& s : m.splits) {
    out << fmt::format("split {:<6} {} samples in {} shard{}\n", s.name, s.count, s.shards.size(),
                       s.shards.size() == 1 ? "" : "s");
    std::vector<std::string> mean, sd;
    for (size_t c = 0; c < s.mean.size(); ++c) {
      mean.push_back(fmt::format("{:.4f}", s.mean[c]));
      sd.push_back(fmt::format("{:.4f}", s.std[c]));
    }
    out << fmt::format("  mean [{}]  std [{}]\n", fmt::join(mean, ", "), fmt::join(sd, ", "));
    const int64_t most = *std::max_element(s.class_counts.begin(), s.class_counts.end());
    for (int64_t c = 0; c < m.num_classes; ++c) {
      const int64_t n = s.class_counts[static_cast<size_t>(c)];
      const int bar = most > 0 ? static_cast<int>(30 * n / most) : 0;
      out << fmt::format("  {:>3} {:<14} {:>8}  {}\n", c, m.class_names[static_cast<size_t>(c)], n,
                         std::string(static_cast<size_t>(bar), '#'));
    }
  }
  return out.str();
}

VerifyReport verify(const std::string& dir) {
  auto m = data::Manifest::load(dir);
  VerifyReport report;
  for (const auto& s : m.splits) {
    std::vector<int64_t> counts(static_cast<size_t>(m.num_classes), 0);
    for (const auto& sh : s.shards) {
      const std::string path = (fs::path(dir) / sh.file).string();
      SMOE_CHECK(fs::exists(path), "{}: shard named in the manifest is missing", path);
      const std::string sum = sha256_file(path);
      SMOE_CHECK(sum == sh.sha256, "{}: checksum mismatch (sha256 {}, manifest says {})", path, sum, sh.sha256);
      data::ShardReader r(path, m.shape);
      SMOE_CHECK(r.count() == sh.count, "{}: holds {} samples but the manifest says {}", path, r.count(), sh.count);
      std::vector<int64_t> labels(static_cast<size_t>(r.count()));
      r.read_labels(labels.data());
      for (size_t i = 0; i < labels.size(); ++i) {
        SMOE_CHECK(labels[i] >= 0 && labels[i] < m.num_classes, "{}: label {} of sample {} is outside [0, {})", path,
                   labels[i], i, m.num_classes);
        counts[static_cast<size_t>(labels[i])]++;
      }
      // Decompress every image chunk too: a damaged chunk fails here.
      std::vector<uint8_t> images(static_cast<size_t>(r.count() * m.image_bytes()));
      r.read_images(images.data());
      report.shards++;
      report.samples += r.count();
      report.bytes += static_cast<int64_t>(fs::file_size(path));
    }
    SMOE_CHECK(counts == s.class_counts, "{}: class counts of split '{}' differ from the manifest's",
               (fs::path(dir) / data::Manifest::kFileName).string(), s.name);
  }
  return report;
}

}  // namespace smoe::data_tools
