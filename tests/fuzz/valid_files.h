// Small valid source files, so that a fuzz input replaces one file of an
// otherwise valid source folder (and reaches past the first check).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data_tools/converters.h"
#include "fuzz_common.h"

namespace smoe::fuzz {

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A version-1.0 .npy file: magic, header length, a header padded to 64 bytes, then the data.
inline std::string npy_bytes(const std::string& descr, const std::string& shape, const std::string& data) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string s = "\x93NUMPY";
  s += '\x01';
  s += '\x00';
  s += static_cast<char>(header.size() & 0xff);
  s += static_cast<char>(header.size() >> 8);
  return s + header + data;
}

// train_images.npy (uint8 [2, 4, 4]) and train_labels.npy (int64 [2]).
inline void write_valid_npy(const std::string& dir) {
  write_bytes(dir + "/train_images.npy", npy_bytes("|u1", "(2, 4, 4)", std::string(32, '\x07')));
  std::string labels(16, '\0');
  labels[8] = 1;
  write_bytes(dir + "/train_labels.npy", npy_bytes("<i8", "(2,)", labels));
}

// CIFAR-10 binary batches with one record each, and the class names.
inline void write_valid_cifar10(const std::string& dir) {
  std::string names;
  for (int c = 0; c < 10; ++c) names += "class" + std::to_string(c) + "\n";
  write_bytes(dir + "/batches.meta.txt", names);
  std::string record(3073, '\x05');
  record[0] = 3;
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                        "data_batch_5.bin", "test_batch.bin"})
    write_bytes(dir + "/" + f, record);
}

// One fuzz input against a converter: a valid source folder is written by
// `write_valid`, then the input (without its first byte) replaces the file
// `even` or `odd` (the first byte's parity picks), and the folder is converted.
template <typename WriteValid>
void convert_with_one_file_replaced(const char* format, WriteValid write_valid, const std::string& even,
                                    const std::string& odd, const uint8_t* data, size_t size) {
  if (size == 0) return;
  namespace fs = std::filesystem;
  const fs::path src = scratch() / format, out = scratch() / (std::string(format) + "-out");
  fs::remove_all(src);
  fs::remove_all(out);
  write_valid(src.string());
  write(std::string(format) + "/" + (data[0] % 2 ? odd : even), data + 1, size - 1);
  expect_clean([&] { data_tools::convert(format, src.string(), out.string(), {}); });
}

}  // namespace smoe::fuzz
