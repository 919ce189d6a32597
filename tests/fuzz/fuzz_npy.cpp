// The .npy converter: the input is train_images.npy (first byte even) or
// train_labels.npy (odd) of an otherwise valid pair of splits.
#include <filesystem>

#include "data_tools/converters.h"
#include "fuzz_common.h"
#include "valid_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  namespace fs = std::filesystem;
  const fs::path src = smoe::fuzz::scratch() / "npy", out = smoe::fuzz::scratch() / "npy-out";
  fs::remove_all(src);
  fs::remove_all(out);
  smoe::fuzz::write_valid_npy(src.string());
  smoe::fuzz::write((data[0] % 2 ? "npy/train_labels.npy" : "npy/train_images.npy"), data + 1, size - 1);
  smoe::fuzz::expect_clean([&] { smoe::data_tools::convert("npy", src.string(), out.string(), {}); });
  return 0;
}
