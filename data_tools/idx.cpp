// MNIST / Fashion-MNIST idx files: big-endian header (0x00 0x00, type 0x08 for
// unsigned bytes, number of dimensions, then one uint32 per dimension), then
// the data. Read through zlib, which also takes uncompressed files.
#include <zlib.h>

#include <filesystem>
#include <memory>

#include "core/error.h"
#include "data_tools/converters.h"

namespace fs = std::filesystem;

namespace smoe::data_tools {
namespace {

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    if (!f_) throw Error(errno_message("cannot open " + path));
    gzbuffer(f_, 1 << 20);
  }
  ~GzFile() {
    if (f_) gzclose(f_);
  }
  // Reads exactly n bytes or fails naming what was being read.
  void read_exact(void* out, size_t n, const char* what) {
    size_t done = 0;
    while (done < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      int got = gzread(f_, static_cast<char*>(out) + done, chunk);
      if (got < 0) corrupt();
      if (got == 0) {
        int err = 0;
        gzerror(f_, &err);
        if (err != Z_OK && err != Z_BUF_ERROR) corrupt();
        fail("{}: truncated: ended after {} of {} bytes of {}", path_, done, n, what);
      }
      done += static_cast<size_t>(got);
    }
  }
  // Confirms the end of the data (and, for gzip, the CRC of the whole stream).
  void expect_end() {
    char extra;
    int got = gzread(f_, &extra, 1);
    if (got < 0) corrupt();
    SMOE_CHECK(got == 0, "{}: unexpected bytes after the data", path_);
    int err = 0;
    gzerror(f_, &err);
    if (err != Z_OK && err != Z_BUF_ERROR) corrupt();
    int rc = gzclose(f_);
    f_ = nullptr;
    if (rc == Z_BUF_ERROR) fail("{}: truncated: the compressed stream ends early", path_);
    if (rc != Z_OK) fail("{}: corrupted: gzip stream failed its integrity check", path_);
  }

 private:
  [[noreturn]] void corrupt() {
    int err = 0;
    const char* msg = gzerror(f_, &err);
    if (err == Z_BUF_ERROR) fail("{}: truncated: the compressed stream ends early", path_);
    fail("{}: corrupted: {}", path_, msg ? msg : "gzip error");
  }
  std::string path_;
  gzFile f_;
};

uint32_t big_endian(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// "train-images-idx3-ubyte" with or without ".gz".
std::string find_idx(const std::string& dir, const std::string& stem) {
  for (const char* suffix : {".gz", ""}) {
    fs::path p = fs::path(dir) / (stem + suffix);
    if (fs::exists(p)) return p.string();
  }
  fail("{}: missing {} (or {}.gz)", dir, stem, stem);
}

}  // namespace

IdxArray read_idx(const std::string& path, int dims) {
  GzFile f(path);
  uint8_t magic[4];
  f.read_exact(magic, 4, "the idx magic");
  const uint32_t expected = 0x00000800u | static_cast<uint32_t>(dims);
  SMOE_CHECK(big_endian(magic) == expected,
             "{}: wrong idx magic 0x{:08x}, expected 0x{:08x} (unsigned bytes, {} dimension{})", path,
             big_endian(magic), expected, dims, dims == 1 ? "" : "s");
  IdxArray a;
  uint64_t total = 1;
  for (int d = 0; d < dims; ++d) {
    uint8_t b[4];
    f.read_exact(b, 4, "the idx header");
    a.dims.push_back(big_endian(b));
    total *= big_endian(b);
    SMOE_CHECK(total <= (uint64_t{1} << 40), "{}: the header's sizes ({}) claim more than 2^40 bytes", path,
               fmt::join(a.dims, " x "));
  }
  SMOE_CHECK(a.dims[0] > 0, "{}: holds no samples", path);
  // Read in pieces, so that a header that claims more than the file holds
  // fails as truncated instead of allocating what it claims.
  constexpr uint64_t kPiece = uint64_t{1} << 20;
  while (a.data.size() < total) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kPiece, total - a.data.size()));
    a.data.resize(a.data.size() + n);
    f.read_exact(a.data.data() + a.data.size() - n, n, "the idx data");
  }
  f.expect_end();
  return a;
}

data::Manifest convert_idx(const std::string& src, const std::string& out, const ConvertOptions& options,
                           const std::string& default_name, const std::vector<std::string>& class_names) {
  SMOE_CHECK(fs::is_directory(src), "source folder {} does not exist", src);
  struct SplitFiles {
    std::string split, images, labels;
  };
  std::vector<SplitFiles> files = {
      {"train", find_idx(src, "train-images-idx3-ubyte"), find_idx(src, "train-labels-idx1-ubyte")},
      {"test", find_idx(src, "t10k-images-idx3-ubyte"), find_idx(src, "t10k-labels-idx1-ubyte")}};
  // Read and check every file before writing anything.
  std::vector<std::pair<IdxArray, IdxArray>> arrays;
  for (const auto& f : files) {
    IdxArray images = read_idx(f.images, 3);
    IdxArray labels = read_idx(f.labels, 1);
    SMOE_CHECK(images.dims[0] == labels.dims[0], "{} holds {} images but {} holds {} labels", f.images, images.dims[0],
               f.labels, labels.dims[0]);
    if (!arrays.empty())
      SMOE_CHECK(images.dims[1] == arrays[0].first.dims[1] && images.dims[2] == arrays[0].first.dims[2],
                 "{}: images of {}x{} pixels, but the train split's are {}x{}", f.images, images.dims[1],
                 images.dims[2], arrays[0].first.dims[1], arrays[0].first.dims[2]);
    arrays.emplace_back(std::move(images), std::move(labels));
  }
  const auto& d = arrays[0].first.dims;
  DatasetWriter w(out, options.name.empty() ? default_name : options.name, {1, d[1], d[2]}, class_names,
                  options.writer);
  nlohmann::json source = {{"format", "idx"}};
  for (size_t s = 0; s < files.size(); ++s) {
    const auto& [images, labels] = arrays[s];
    std::vector<int64_t> y(labels.data.begin(), labels.data.end());
    w.begin_split(files[s].split);
    w.add(images.data.data(), y.data(), static_cast<int64_t>(y.size()), files[s].labels);
    w.end_split();
    source[files[s].split] = {fs::path(files[s].images).filename().string(),
                              fs::path(files[s].labels).filename().string()};
  }
  w.set_source(source);
  return w.finish();
}

}  // namespace smoe::data_tools
