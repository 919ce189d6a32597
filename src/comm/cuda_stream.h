// libtorch's current CUDA stream of a device, as the cudaStream_t a
// communicator's Buffer carries (comm::Device::stream): NCCL collectives are
// enqueued on it, after the kernels that produced their data. Null (the
// legacy default stream) in builds against a libtorch without CUDA.
#pragma once

namespace smoe::comm {

void* current_cuda_stream(int device);

}  // namespace smoe::comm
