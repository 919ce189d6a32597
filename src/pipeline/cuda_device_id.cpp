#include "pipeline/cuda_device_id.h"

#ifdef SMOE_WITH_CUDA_RUNTIME
#include <ATen/cuda/CUDAContext.h>
#else
#include <fmt/format.h>

#include "pipeline/provenance.h"
#endif

namespace smoe::pipeline {

std::string cuda_device_id(int index) {
#ifdef SMOE_WITH_CUDA_RUNTIME
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
  static const char* hex = "0123456789abcdef";
  std::string out = "GPU-";
  for (int i = 0; i < 16; ++i) {
    const auto b = static_cast<unsigned char>(p->uuid.bytes[i]);
    out += hex[b >> 4];
    out += hex[b & 15];
    if (i == 3 || i == 5 || i == 7 || i == 9) out += '-';
  }
  return out;
#else
  return fmt::format("cuda:{}@{}", index, host_name());
#endif
}

}  // namespace smoe::pipeline
