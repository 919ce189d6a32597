// The idx reader (MNIST / Fashion-MNIST images and labels), gzip'ed or not.
#include "data_tools/converters.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = smoe::fuzz::write("input-idx", data, size);
  smoe::fuzz::expect_clean([&] { smoe::data_tools::read_idx(path, 3); });
  smoe::fuzz::expect_clean([&] { smoe::data_tools::read_idx(path, 1); });
  return 0;
}
