#include "data/manifest.h"

#include <algorithm>
#include <filesystem>
#include <type_traits>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"

namespace smoe::data {
namespace {

using nlohmann::json;

// Whether every number in `v` is an integer: nlohmann converts a float to an
// integer field with a cast whose overflow is undefined (fuzz_manifest found
// a count of 3e120), so integer fields take integers only.
bool integers_only(const json& v) {
  if (v.is_number()) return v.is_number_integer();
  if (v.is_array()) return std::all_of(v.begin(), v.end(), [](const json& e) { return integers_only(e); });
  return true;
}

template <typename T>
struct is_integer_field : std::is_integral<T> {};
template <typename T>
struct is_integer_field<std::vector<T>> : std::is_integral<T> {};

template <typename T>
T field(const json& j, const char* key, const std::string& origin) {
  SMOE_CHECK(j.is_object() && j.contains(key), "{}: missing field '{}'", origin, key);
  if constexpr (is_integer_field<T>::value)
    SMOE_CHECK(integers_only(j.at(key)), "{}: field '{}' must hold integers", origin, key);
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    fail("{}: field '{}' has the wrong type", origin, key);
  }
}

}  // namespace

size_t SplitInfo::shard_of(int64_t id) const {
  SMOE_CHECK(id >= 0 && id < count, "sample id {} outside split '{}' of {} samples", id, name, count);
  auto it =
      std::upper_bound(shards.begin(), shards.end(), id, [](int64_t v, const ShardInfo& s) { return v < s.offset; });
  return static_cast<size_t>(std::distance(shards.begin(), it)) - 1;
}

bool is_valid_utf8(const std::string& s) {
  // Well-formed sequences (Unicode Table 3-7): no overlong forms, no surrogates, nothing above U+10FFFF.
  auto in = [](unsigned char c, unsigned lo, unsigned hi) { return c >= lo && c <= hi; };
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xbf;  // range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (in(c, 0xc2, 0xdf)) {
      len = 2;
    } else if (in(c, 0xe0, 0xef)) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (in(c, 0xf0, 0xf4)) {
      len = 4;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return false;
    }
    if (i + len > n || !in(p[i + 1], lo, hi)) return false;
    for (size_t k = 2; k < len; ++k)
      if (!in(p[i + k], 0x80, 0xbf)) return false;
    i += len;
  }
  return true;
}

json Manifest::to_json() const {
  SMOE_CHECK(is_valid_utf8(name), "dataset name is not valid UTF-8");
  for (size_t c = 0; c < class_names.size(); ++c)
    SMOE_CHECK(is_valid_utf8(class_names[c]), "the name of class {} is not valid UTF-8", c);
  json splits_json = json::object();
  for (const auto& s : splits) {
    json shards_json = json::array();
    for (const auto& sh : s.shards)
      shards_json.push_back(
          {{"file", sh.file}, {"offset", sh.offset}, {"count", sh.count}, {"sha256", sh.sha256}, {"bytes", sh.bytes}});
    splits_json[s.name] = {{"count", s.count},
                           {"class_counts", s.class_counts},
                           {"mean", s.mean},
                           {"std", s.std},
                           {"shards", shards_json}};
  }
  const SplitInfo* st = splits.empty() ? nullptr : &stats_split();
  return {{"format", kFormat},
          {"version", kVersion},
          {"name", name},
          {"image_shape", shape},
          {"num_classes", num_classes},
          {"class_names", class_names},
          {"mean", st ? st->mean : std::vector<double>{}},
          {"std", st ? st->std : std::vector<double>{}},
          {"chunk_images", chunk_images},
          {"compression", compression},
          {"source", source},
          {"splits", splits_json}};
}

Manifest Manifest::from_json(const json& j, const std::string& origin) {
  SMOE_CHECK(j.is_object(), "{}: not a JSON object", origin);
  SMOE_CHECK(field<std::string>(j, "format", origin) == kFormat, "{}: field 'format' is not '{}'", origin, kFormat);
  int version = field<int>(j, "version", origin);
  SMOE_CHECK(version == kVersion, "{}: dataset format version {} is not supported (expected {})", origin, version,
             kVersion);
  Manifest m;
  m.name = field<std::string>(j, "name", origin);
  m.shape = field<std::vector<int64_t>>(j, "image_shape", origin);
  SMOE_CHECK(m.shape.size() == 3 && m.shape[0] > 0 && m.shape[1] > 0 && m.shape[2] > 0,
             "{}: field 'image_shape' must be [C, H, W] with positive sizes", origin);
  m.num_classes = field<int64_t>(j, "num_classes", origin);
  SMOE_CHECK(m.num_classes > 0, "{}: field 'num_classes' must be positive", origin);
  m.class_names = field<std::vector<std::string>>(j, "class_names", origin);
  SMOE_CHECK(m.class_names.size() == static_cast<size_t>(m.num_classes), "{}: {} class names for {} classes", origin,
             m.class_names.size(), m.num_classes);
  m.chunk_images = field<int64_t>(j, "chunk_images", origin);
  m.compression = field<std::string>(j, "compression", origin);
  if (j.contains("source")) m.source = j["source"];
  const json& splits = j.contains("splits") ? j["splits"] : json();
  SMOE_CHECK(splits.is_object() && !splits.empty(), "{}: field 'splits' must name at least one split", origin);
  for (const auto& [name, sj] : splits.items()) {
    std::string where = origin + " split '" + name + "'";
    SplitInfo s;
    s.name = name;
    s.count = field<int64_t>(sj, "count", where);
    s.class_counts = field<std::vector<int64_t>>(sj, "class_counts", where);
    s.mean = field<std::vector<double>>(sj, "mean", where);
    s.std = field<std::vector<double>>(sj, "std", where);
    SMOE_CHECK(s.mean.size() == static_cast<size_t>(m.shape[0]) && s.std.size() == s.mean.size(),
               "{}: mean/std must have one value per channel", where);
    int64_t offset = 0;
    for (const auto& shj : field<json>(sj, "shards", where)) {
      ShardInfo sh;
      sh.file = field<std::string>(shj, "file", where);
      sh.offset = field<int64_t>(shj, "offset", where);
      sh.count = field<int64_t>(shj, "count", where);
      sh.sha256 = field<std::string>(shj, "sha256", where);
      if (shj.contains("bytes")) sh.bytes = field<int64_t>(shj, "bytes", where);
      SMOE_CHECK(sh.bytes >= 0, "{}: shard {} has a negative byte count", where, sh.file);
      SMOE_CHECK(sh.offset == offset && sh.count > 0, "{}: shard {} has offset {} and count {} (expected offset {})",
                 where, sh.file, sh.offset, sh.count, offset);
      SMOE_CHECK(sh.file.find('/') == std::string::npos && sh.file.find("..") == std::string::npos,
                 "{}: shard file name '{}' must be a plain file name", where, sh.file);
      offset += sh.count;
      s.shards.push_back(sh);
    }
    SMOE_CHECK(offset == s.count, "{}: shards hold {} samples but count is {}", where, offset, s.count);
    m.splits.push_back(std::move(s));
  }
  // Keep a stable order: train, test, then the rest alphabetically (JSON objects are sorted).
  std::stable_sort(m.splits.begin(), m.splits.end(), [](const SplitInfo& a, const SplitInfo& b) {
    auto rank = [](const std::string& n) { return n == "train" ? 0 : n == "test" ? 1 : 2; };
    return rank(a.name) < rank(b.name);
  });
  return m;
}

Manifest Manifest::load(const std::string& dir) {
  std::string path = (std::filesystem::path(dir) / kFileName).string();
  SMOE_CHECK(std::filesystem::is_directory(dir), "dataset folder {} does not exist", dir);
  SMOE_CHECK(std::filesystem::exists(path), "{} is not a dataset folder: {} is missing", dir, kFileName);
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail("{}: invalid JSON ({})", path, e.what());
  }
  try {
    return from_json(j, path);
  } catch (const json::exception& e) {  // a field of the wrong JSON type the checks did not name
    fail("{}: invalid manifest ({})", path, e.what());
  }
}

void Manifest::save(const std::string& dir) const {
  write_file_atomic((std::filesystem::path(dir) / kFileName).string(), to_json().dump(2) + "\n");
}

bool Manifest::has_split(const std::string& n) const {
  return std::any_of(splits.begin(), splits.end(), [&](const SplitInfo& s) { return s.name == n; });
}

const SplitInfo& Manifest::split(const std::string& n) const {
  for (const auto& s : splits)
    if (s.name == n) return s;
  std::vector<std::string> names;
  for (const auto& s : splits) names.push_back(s.name);
  fail("dataset '{}' has no split '{}' (it has: {})", name, n, fmt::join(names, ", "));
}

const SplitInfo& Manifest::stats_split() const {
  for (const auto& s : splits)
    if (s.name == "train") return s;
  SMOE_ASSERT(!splits.empty(), "manifest without splits");
  return splits.front();
}

}  // namespace smoe::data
