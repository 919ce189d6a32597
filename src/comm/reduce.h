// Element-wise reduction of host buffers, shared by the in-process
// communicator and tests.
#pragma once

#include "comm/communicator.h"

namespace smoe::comm {

// dst[i] = op(dst[i], src[i]) for `count` elements of `dtype`.
void reduce_into(void* dst, const void* src, size_t count, DType dtype, ReduceOp op);

}  // namespace smoe::comm
