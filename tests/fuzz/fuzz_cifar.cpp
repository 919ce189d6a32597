// The CIFAR-10 converter: the input is data_batch_1.bin (first byte even) or
// batches.meta.txt (odd) of an otherwise valid set of batches.
#include "valid_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  smoe::fuzz::convert_with_one_file_replaced("cifar10", smoe::fuzz::write_valid_cifar10, "data_batch_1.bin",
                                             "batches.meta.txt", data, size);
  return 0;
}
