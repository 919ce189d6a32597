// The .npy converter: the input is train_images.npy (first byte even) or
// train_labels.npy (odd) of an otherwise valid pair of splits.
#include "valid_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  smoe::fuzz::convert_with_one_file_replaced("npy", smoe::fuzz::write_valid_npy, "train_images.npy", "train_labels.npy",
                                             data, size);
  return 0;
}
