#include "comm/reduce.h"

#include <algorithm>

namespace smoe::comm {
namespace {

template <typename T>
void reduce_typed(T* dst, const T* src, size_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      for (size_t i = 0; i < n; ++i) dst[i] += src[i];
      break;
    case ReduceOp::max:
      for (size_t i = 0; i < n; ++i) dst[i] = std::max(dst[i], src[i]);
      break;
    case ReduceOp::min:
      for (size_t i = 0; i < n; ++i) dst[i] = std::min(dst[i], src[i]);
      break;
  }
}

}  // namespace

void reduce_into(void* dst, const void* src, size_t count, DType dtype, ReduceOp op) {
  switch (dtype) {
    case DType::f32:
      return reduce_typed(static_cast<float*>(dst), static_cast<const float*>(src), count, op);
    case DType::f64:
      return reduce_typed(static_cast<double*>(dst), static_cast<const double*>(src), count, op);
    case DType::i32:
      return reduce_typed(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), count, op);
    case DType::i64:
      return reduce_typed(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), count, op);
    case DType::u8:
      return reduce_typed(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), count, op);
  }
}

}  // namespace smoe::comm
