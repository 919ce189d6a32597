#include "comm/cuda_stream.h"

#ifdef SMOE_WITH_CUDA_RUNTIME
#include <c10/cuda/CUDAStream.h>
#endif

namespace smoe::comm {

void* current_cuda_stream(int device) {
#ifdef SMOE_WITH_CUDA_RUNTIME
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return nullptr;
#endif
}

}  // namespace smoe::comm
