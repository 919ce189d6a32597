// NumPy .npy pairs: for each split, <split>_images.npy (uint8, [n, H, W],
// [n, H, W, C] or [n, C, H, W]) and <split>_labels.npy (any integer dtype,
// [n]). The .npy header is parsed by xtensor's reader.
#include <xtensor/xnpy.hpp>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data_tools/converters.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {
namespace {

struct Npy {
  std::string path;
  std::string dtype;  // e.g. "<u1", "<i8", "|u1"
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

Npy read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(errno_message("cannot open " + path));
  Npy n;
  n.path = path;
  try {
    auto f = xt::detail::load_npy_file(in);
    SMOE_CHECK(!in.fail(), "{}: truncated: the data is shorter than its header says", path);
    SMOE_CHECK(!f.m_fortran_order, "{}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
               path);
    n.dtype = f.m_typestring;
    for (auto d : f.m_shape) n.shape.push_back(static_cast<int64_t>(d));
    n.bytes.assign(f.m_buffer, f.m_buffer + f.m_n_bytes);
  } catch (const Error&) {
    throw;
  } catch (const std::runtime_error& e) {
    fail("{}: not a valid .npy file ({})", path, e.what());
  }
  return n;
}

template <typename T>
void widen(const Npy& a, std::vector<int64_t>& out) {
  const T* p = reinterpret_cast<const T*>(a.bytes.data());
  out.assign(p, p + a.bytes.size() / sizeof(T));
}

std::vector<int64_t> labels_of(const Npy& a) {
  SMOE_CHECK(a.shape.size() == 1, "{}: labels must be a 1-D array, got {} dimensions", a.path, a.shape.size());
  std::string t = a.dtype.substr(1);  // drop the byte-order character
  SMOE_CHECK(a.dtype[0] != '>', "{}: big-endian arrays are not supported", a.path);
  std::vector<int64_t> out;
  if (t == "i8")
    widen<int64_t>(a, out);
  else if (t == "i4")
    widen<int32_t>(a, out);
  else if (t == "i2")
    widen<int16_t>(a, out);
  else if (t == "i1")
    widen<int8_t>(a, out);
  else if (t == "u8")
    widen<uint64_t>(a, out);
  else if (t == "u4")
    widen<uint32_t>(a, out);
  else if (t == "u2")
    widen<uint16_t>(a, out);
  else if (t == "u1")
    widen<uint8_t>(a, out);
  else
    fail("{}: labels must have an integer dtype, got '{}'", a.path, a.dtype);
  return out;
}

// Images as uint8 [n, C, H, W], transposing channels-last input.
std::vector<int64_t> image_shape(const Npy& a, const std::string& layout, std::vector<uint8_t>& out) {
  SMOE_CHECK(a.dtype == "|u1" || a.dtype == "<u1", "{}: images must be uint8, got dtype '{}'", a.path, a.dtype);
  const auto& s = a.shape;
  SMOE_CHECK(s.size() == 3 || s.size() == 4,
             "{}: images must be [n, H, W], [n, H, W, C] or [n, C, H, W], got {} dimensions", a.path, s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(a.bytes.data());
  if (s.size() == 3) {
    out.assign(p, p + a.bytes.size());
    return {1, s[1], s[2]};
  }
  bool nhwc = layout == "nhwc" || (layout == "auto" && s[3] <= 4 && s[1] > 4);
  SMOE_CHECK(layout == "auto" || layout == "nhwc" || layout == "nchw", "--layout must be auto, nchw or nhwc, got '{}'",
             layout);
  if (!nhwc) {
    out.assign(p, p + a.bytes.size());
    return {s[1], s[2], s[3]};
  }
  const int64_t n = s[0], H = s[1], W = s[2], C = s[3];
  out.resize(a.bytes.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < C; ++c)
          out[static_cast<size_t>(((i * C + c) * H + y) * W + x)] = p[((i * H + y) * W + x) * C + c];
  return {C, H, W};
}

}  // namespace

data::Manifest convert_npy(const std::string& src, const std::string& out, const ConvertOptions& options) {
  SMOE_CHECK(fs::is_directory(src), "source folder {} does not exist", src);
  // Splits present: every <split>_images.npy, train first, test second.
  std::vector<std::string> splits;
  for (const auto& e : fs::directory_iterator(src)) {
    std::string f = e.path().filename().string();
    const std::string suffix = "_images.npy";
    if (f.size() > suffix.size() && f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0)
      splits.push_back(f.substr(0, f.size() - suffix.size()));
  }
  SMOE_CHECK(!splits.empty(), "{}: no <split>_images.npy files", src);
  std::sort(splits.begin(), splits.end(), [](const std::string& a, const std::string& b) {
    auto rank = [](const std::string& n) { return n == "train" ? 0 : n == "test" ? 1 : 2; };
    return std::make_pair(rank(a), a) < std::make_pair(rank(b), b);
  });

  struct Split {
    std::string name, labels_path;
    std::vector<int64_t> shape;
    std::vector<uint8_t> images;
    std::vector<int64_t> labels;
  };
  std::vector<Split> data;
  int64_t max_label = -1;
  for (const auto& name : splits) {
    Split s;
    s.name = name;
    Npy images = read_npy((fs::path(src) / (name + "_images.npy")).string());
    s.labels_path = (fs::path(src) / (name + "_labels.npy")).string();
    SMOE_CHECK(fs::exists(s.labels_path), "missing {}", s.labels_path);
    Npy labels = read_npy(s.labels_path);
    s.shape = image_shape(images, options.npy_layout, s.images);
    s.labels = labels_of(labels);
    SMOE_CHECK(images.shape[0] == static_cast<int64_t>(s.labels.size()), "{} holds {} images but {} holds {} labels",
               images.path, images.shape[0], labels.path, s.labels.size());
    SMOE_CHECK(data.empty() || s.shape == data[0].shape, "{}: image shape differs from the {} split's", images.path,
               data[0].name);
    for (size_t i = 0; i < s.labels.size(); ++i) {
      SMOE_CHECK(s.labels[i] >= 0, "{}: label {} of sample {} is negative", s.labels_path, s.labels[i], i);
      max_label = std::max(max_label, s.labels[i]);
    }
    data.push_back(std::move(s));
  }
  std::vector<std::string> names;
  for (int64_t c = 0; c <= max_label; ++c) names.push_back(std::to_string(c));
  DatasetWriter w(out, options.name.empty() ? fs::path(src).filename().string() : options.name, data[0].shape, names,
                  options.writer);
  for (auto& s : data) {
    w.begin_split(s.name);
    w.add(s.images.data(), s.labels.data(), static_cast<int64_t>(s.labels.size()), s.labels_path);
    w.end_split();
  }
  w.set_source({{"format", "npy"}});
  return w.finish();
}

}  // namespace smoe::data_tools
