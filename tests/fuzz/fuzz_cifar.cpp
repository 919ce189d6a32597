// The CIFAR-10 converter: the input is data_batch_1.bin (first byte even) or
// batches.meta.txt (odd) of an otherwise valid set of batches.
#include <filesystem>

#include "data_tools/converters.h"
#include "fuzz_common.h"
#include "valid_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  namespace fs = std::filesystem;
  const fs::path src = smoe::fuzz::scratch() / "cifar", out = smoe::fuzz::scratch() / "cifar-out";
  fs::remove_all(src);
  fs::remove_all(out);
  smoe::fuzz::write_valid_cifar10(src.string());
  smoe::fuzz::write((data[0] % 2 ? "cifar/batches.meta.txt" : "cifar/data_batch_1.bin"), data + 1, size - 1);
  smoe::fuzz::expect_clean([&] { smoe::data_tools::convert("cifar10", src.string(), out.string(), {}); });
  return 0;
}
