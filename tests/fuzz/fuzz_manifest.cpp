// The dataset manifest reader (manifest.json of a dataset folder).
#include "data/manifest.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  smoe::fuzz::write("dataset/manifest.json", data, size);
  smoe::fuzz::expect_clean([] { smoe::data::Manifest::load((smoe::fuzz::scratch() / "dataset").string()); });
  return 0;
}
