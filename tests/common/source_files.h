// Writers of small source files in the formats smoe-data converts, for tests.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace smoe::testing {

inline void put_be32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}

// An idx file: magic 0x0000080<dims>, the dimensions, then `data`.
inline std::string idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string s;
  put_be32(s, 0x00000800u | static_cast<uint32_t>(dims.size()));
  for (auto d : dims) put_be32(s, d);
  s.append(data.begin(), data.end());
  return s;
}

inline void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

inline void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// An MNIST-style folder of n_train / n_test 28x28 images, label i % 10.
inline void write_mnist_like(const std::string& dir, uint32_t n_train, uint32_t n_test) {
  for (auto [prefix, n] : {std::pair<std::string, uint32_t>{"train", n_train}, {"t10k", n_test}}) {
    std::vector<uint8_t> images(n * 28 * 28), labels(n);
    for (uint32_t i = 0; i < n; ++i) {
      labels[i] = static_cast<uint8_t>(i % 10);
      for (uint32_t p = 0; p < 28 * 28; ++p) images[i * 784 + p] = static_cast<uint8_t>((i + p) % 251);
    }
    write_gz(dir + "/" + prefix + "-images-idx3-ubyte.gz", idx_bytes({n, 28, 28}, images));
    write_gz(dir + "/" + prefix + "-labels-idx1-ubyte.gz", idx_bytes({n}, labels));
  }
}

}  // namespace smoe::testing
