// NumPy .npy pairs: for each split, <split>_images.npy (uint8, [n, H, W],
// [n, H, W, C] or [n, C, H, W]) and <split>_labels.npy (any integer dtype,
// [n]).
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data_tools/converters.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {
namespace {

constexpr int64_t kMaxClasses = 100000;

struct Npy {
  std::string path;
  std::string dtype;  // e.g. "<u1", "<i8", "|u1"
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

// The header is a Python dict literal as NumPy writes it:
//   {'descr': '<i8', 'fortran_order': False, 'shape': (3, 28, 28), }
// parsed strictly here (xtensor's reader trusts it: fuzz_npy found an
// out-of-bounds read on a malformed one and an allocation of whatever size a
// shape claims).
class HeaderParser {
 public:
  HeaderParser(std::string text, std::string path) : t_(std::move(text)), path_(std::move(path)) {}
  // Positions the parser after "'key':".
  void key(const char* name) {
    const std::string quoted = std::string("'") + name + "'";
    const size_t at = t_.find(quoted);
    SMOE_CHECK(at != std::string::npos, "{}: .npy header without '{}'", path_, name);
    i_ = at + quoted.size();
    expect(':');
  }
  std::string quoted() {
    expect('\'');
    const size_t end = t_.find('\'', i_);
    SMOE_CHECK(end != std::string::npos, "{}: malformed .npy header (unterminated string)", path_);
    std::string v = t_.substr(i_, end - i_);
    i_ = end + 1;
    return v;
  }
  bool boolean() {
    spaces();
    for (const char* word : {"True", "False"})
      if (t_.compare(i_, std::strlen(word), word) == 0) {
        i_ += std::strlen(word);
        return word[0] == 'T';
      }
    fail("{}: malformed .npy header (expected True or False)", path_);
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> dims;
    for (;;) {
      spaces();
      if (i_ < t_.size() && t_[i_] == ')') break;
      uint64_t v = 0;
      const size_t start = i_;
      while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) {
        v = v * 10 + static_cast<uint64_t>(t_[i_++] - '0');
        SMOE_CHECK(v <= (uint64_t{1} << 40), "{}: a dimension of the .npy shape exceeds 2^40", path_);
      }
      SMOE_CHECK(i_ > start, "{}: malformed shape in the .npy header", path_);
      dims.push_back(static_cast<int64_t>(v));
      spaces();
      if (i_ < t_.size() && t_[i_] == ',') ++i_;
    }
    ++i_;
    return dims;
  }

 private:
  void spaces() {
    while (i_ < t_.size() && t_[i_] == ' ') ++i_;
  }
  void expect(char c) {
    spaces();
    SMOE_CHECK(i_ < t_.size() && t_[i_] == c, "{}: malformed .npy header (expected '{}')", path_, c);
    ++i_;
  }
  std::string t_, path_;
  size_t i_ = 0;
};

Npy read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(errno_message("cannot open " + path));
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char head[12] = {};
  in.read(reinterpret_cast<char*>(head), 12);
  SMOE_CHECK(file_size >= 10 && std::memcmp(head, "\x93NUMPY", 6) == 0, "{}: not a .npy file (no \\x93NUMPY magic)",
             path);
  const int major = head[6];
  SMOE_CHECK(major >= 1 && major <= 3, "{}: unsupported .npy version {}", path, major);
  const uint64_t header_len =
      major == 1 ? uint64_t{head[8]} | uint64_t{head[9]} << 8
                 : uint64_t{head[8]} | uint64_t{head[9]} << 8 | uint64_t{head[10]} << 16 | uint64_t{head[11]} << 24;
  const uint64_t data_start = (major == 1 ? 10 : 12) + header_len;
  SMOE_CHECK(header_len >= 2 && data_start <= file_size, "{}: truncated .npy header", path);
  std::string header(static_cast<size_t>(header_len), '\0');
  in.clear();
  in.seekg(static_cast<std::streamoff>(data_start - header_len));
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  SMOE_CHECK(in && header.back() == '\n' && header.find('{') != std::string::npos, "{}: malformed .npy header", path);

  Npy n;
  n.path = path;
  HeaderParser p(header, path);
  p.key("descr");
  n.dtype = p.quoted();
  p.key("fortran_order");
  SMOE_CHECK(!p.boolean(), "{}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray", path);
  p.key("shape");
  n.shape = p.tuple();
  // Item size: the digits after the byte order and kind ('<i8' -> 8).
  uint64_t item = 0;
  for (size_t i = 2; i < n.dtype.size() && std::isdigit(static_cast<unsigned char>(n.dtype[i])) && item < 4096; ++i)
    item = item * 10 + static_cast<uint64_t>(n.dtype[i] - '0');
  SMOE_CHECK(n.dtype.size() >= 3 && item > 0, "{}: unsupported .npy dtype '{}'", path, n.dtype);
  uint64_t count = 1;
  for (int64_t d : n.shape) {
    count *= static_cast<uint64_t>(d);
    SMOE_CHECK(count <= (uint64_t{1} << 40), "{}: the .npy shape claims more than 2^40 values", path);
  }
  SMOE_CHECK(file_size - data_start >= count * item, "{}: truncated: the data is shorter than its header says", path);
  n.bytes.resize(static_cast<size_t>(count * item));
  in.read(n.bytes.data(), static_cast<std::streamsize>(n.bytes.size()));
  SMOE_CHECK(in, "{}: cannot read the .npy data", path);
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
      // Class ids name the classes 0..max: a stray huge id would make that many (ImageNet-21k has 21,841).
      SMOE_CHECK(s.labels[i] < kMaxClasses, "{}: label {} of sample {} is not below {}, the most classes smoe takes",
                 s.labels_path, s.labels[i], i, kMaxClasses);
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
