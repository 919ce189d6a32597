#include "comm/tensor_collectives.h"

#include <ATen/ATen.h>

#include "comm/cuda_stream.h"
#include "core/error.h"

namespace smoe::comm {
namespace {

DType dtype_for(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::f32;
    case at::kDouble:
      return DType::f64;
    case at::kInt:
      return DType::i32;
    case at::kLong:
      return DType::i64;
    case at::kByte:
      return DType::u8;
    default:
      fail("communicator: tensors of dtype {} are not supported", c10::toString(t));
  }
}

at::ScalarType scalar_type_for(DType t) {
  switch (t) {
    case DType::f32:
      return at::kFloat;
    case DType::f64:
      return at::kDouble;
    case DType::i32:
      return at::kInt;
    case DType::i64:
      return at::kLong;
    case DType::u8:
      return at::kByte;
  }
  return at::kByte;
}

// Runs `collective` on the tensor's memory where the communicator takes it
// (host tensors; CUDA ones with NCCL), else on a contiguous host copy that is
// copied back when `write_back`.
template <class Fn>
void on_buffer(Communicator& comm, const at::Tensor& t, bool write_back, Fn collective) {
  if (t.is_cpu() || (t.is_cuda() && comm.takes_device_buffers())) {
    collective(buffer_of(t));
    return;
  }
  at::Tensor host = t.to(at::kCPU).contiguous();
  collective(buffer_of(host));
  if (write_back) t.copy_(host);
}

}  // namespace

Buffer buffer_of(const at::Tensor& t) {
  SMOE_CHECK(t.defined(), "communicator: undefined tensor");
  SMOE_CHECK(t.is_contiguous(), "communicator: tensor must be contiguous");
  SMOE_CHECK(t.is_cpu() || t.is_cuda(),
             "communicator: a tensor on {} has no buffer a communicator can take; stage it "
             "through the host (tensor_collectives.h)",
             t.device().str());
  Device d;
  if (t.is_cuda()) d = Device{true, static_cast<int>(t.get_device()), current_cuda_stream(t.get_device())};
  return Buffer{t.data_ptr(), static_cast<size_t>(t.numel()), dtype_for(t.scalar_type()), d};
}

void allreduce(Communicator& comm, const at::Tensor& t, ReduceOp op) {
  on_buffer(comm, t, true, [&](Buffer b) { comm.allreduce(b, op); });
}

void broadcast(Communicator& comm, const at::Tensor& t, int root) {
  on_buffer(comm, t, comm.rank() != root, [&](Buffer b) { comm.broadcast(b, root); });
}

void allreduce_in_chunks(Communicator& comm, const at::Tensor& t, int64_t rows, ReduceOp op) {
  SMOE_CHECK(rows >= 1, "allreduce_in_chunks: chunk of {} rows", rows);
  const int64_t n = t.dim() == 0 ? 1 : t.size(0);
  for (int64_t start = 0; start < n; start += rows) {
    at::Tensor part = t.narrow(0, start, std::min(rows, n - start));
    if (part.is_contiguous()) {
      allreduce(comm, part, op);
    } else {
      at::Tensor c = part.contiguous();
      allreduce(comm, c, op);
      part.copy_(c);
    }
  }
}

at::Tensor broadcast_tensor(Communicator& comm, const at::Tensor& t, int root) {
  std::vector<int64_t> header;  // dtype, ndim, dims...
  if (comm.rank() == root) {
    header.push_back(static_cast<int64_t>(dtype_for(t.scalar_type())));
    header.push_back(t.dim());
    for (auto s : t.sizes()) header.push_back(s);
  }
  int64_t n = static_cast<int64_t>(header.size());
  comm.broadcast(host_buffer(&n, 1), root);
  header.resize(static_cast<size_t>(n));
  comm.broadcast(host_buffer(header), root);
  at::Tensor out;
  if (comm.rank() == root) {
    out = t.contiguous();
  } else {
    std::vector<int64_t> sizes(header.begin() + 2, header.end());
    out = at::empty(sizes, at::TensorOptions().dtype(scalar_type_for(static_cast<DType>(header[0]))));
  }
  if (out.numel() > 0) broadcast(comm, out, root);
  return out;
}

at::Tensor gather_rows(Communicator& comm, const at::Tensor& local, int root) {
  at::Tensor c = local.contiguous().cpu();
  auto parts = comm.gather_bytes(
      std::string_view(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes())), root);
  if (comm.rank() != root) return at::Tensor();
  SMOE_CHECK(c.dim() >= 1, "gather_rows: tensor needs at least one dimension");
  int64_t row_numel = 1;
  for (int64_t d = 1; d < c.dim(); ++d) row_numel *= c.size(d);
  const int64_t row_bytes = row_numel * static_cast<int64_t>(c.element_size());
  int64_t rows = 0;
  for (const auto& p : parts) {
    SMOE_ASSERT(row_bytes > 0 && static_cast<int64_t>(p.size()) % row_bytes == 0, "gather_rows: ragged rows");
    rows += static_cast<int64_t>(p.size()) / row_bytes;
  }
  std::vector<int64_t> sizes = c.sizes().vec();
  sizes[0] = rows;
  at::Tensor out = at::empty(sizes, c.options());
  char* dst = static_cast<char*>(out.data_ptr());
  for (const auto& p : parts) {
    std::memcpy(dst, p.data(), p.size());
    dst += p.size();
  }
  return out;
}

at::Tensor reorder_by_id(const at::Tensor& rows, const at::Tensor& ids) {
  at::Tensor out = at::empty_like(rows);
  out.index_copy_(0, ids.to(rows.device()), rows);
  return out;
}

ExactSum::ExactSum(const std::vector<at::Tensor>& like) {
  int64_t total = 0;
  for (const auto& t : like) {
    offsets_.push_back(total);
    numels_.push_back(t.numel());
    total += t.numel();
  }
  // The accumulator lives where the terms live (CUDA terms reduce through NCCL).
  auto options = at::TensorOptions().dtype(at::kLong);
  if (!like.empty()) options = options.device(like[0].device());
  total_ = total;
  flat_ = at::zeros({total + 2}, options);
}

void ExactSum::check_bound(int64_t bound, const char* where) const {
  const double total = std::ldexp(static_cast<double>(bound), -20);
  SMOE_CHECK(total < kMaxTotal,
             "exact sum of {}s{}: their magnitudes add up to {} (2^23 or more), so the 64-bit fixed-point sum "
             "would overflow: training diverged; lower the learning rate",
             what_, where, total);
}

void ExactSum::add(const std::vector<at::Tensor>& terms, const char* what) {
  SMOE_ASSERT(terms.size() == numels_.size(), "ExactSum::add: {} terms for {} accumulators", terms.size(),
              numels_.size());
  // One flat float vector, then a handful of whole-vector operations.
  // Scaling by 2^40 is exact in float32 (a power of two), rounding a float
  // to an integer is exact, and so is the conversion to int64 below 2^63.
  std::vector<at::Tensor> flat;
  flat.reserve(terms.size());
  for (const auto& t : terms) flat.push_back(t.detach().reshape({-1}).to(at::kFloat));
  at::Tensor v = at::cat(flat);
  what_ = what;
  const float scale = static_cast<float>(std::ldexp(1.0, kFractionBits));
  at::Tensor sums = flat_.narrow(0, 0, total_), bound = flat_.narrow(0, total_, 1),
             bad_adds = flat_.narrow(0, total_ + 1, 1);
  at::Tensor max_abs = v.numel() ? v.abs().max().to(at::kDouble) : at::zeros({}, v.options().dtype(at::kDouble));
  if (v.is_cpu()) {
    const double m = max_abs.item<double>();
    if (!std::isfinite(m) || m > kMaxAbs) {
      for (size_t i = 0; i < flat.size(); ++i) {
        const double mi = flat[i].numel() ? flat[i].abs().max().item<double>() : 0.0;
        SMOE_CHECK(std::isfinite(mi), "{} {} is not finite (nan or inf): training diverged; lower the learning rate",
                   what, i);
        SMOE_CHECK(mi <= kMaxAbs, "{} {} reaches {} (above {}): training diverged; lower the learning rate", what, i,
                   mi, kMaxAbs);
      }
    }
    sums.add_(v.mul_(scale).round_().to(at::kLong));
    bound.add_(static_cast<int64_t>(std::ceil(std::ldexp(m, 20))));
    check_bound(bound.item<int64_t>(), "");
    return;
  }
  // On a device: no host read. A bad term is counted, its values zeroed and
  // its bound capped, so that every conversion stays defined; allreduce()
  // reports it.
  const at::Tensor bad = max_abs.isfinite().logical_not().logical_or(max_abs > kMaxAbs);
  bad_adds.add_(bad.to(at::kLong).reshape({1}));
  bound.add_(at::ceil(max_abs.nan_to_num(kMaxAbs, kMaxAbs, kMaxAbs).clamp_max(kMaxAbs) * std::ldexp(1.0, 20))
                 .to(at::kLong)
                 .reshape({1}));
  sums.add_(v.nan_to_num_(0, 0, 0).clamp_(-kMaxAbs, kMaxAbs).mul_(scale).round_().to(at::kLong));
}

void ExactSum::allreduce(Communicator& comm) {
  comm::allreduce(comm, flat_, ReduceOp::sum);
  const at::Tensor tail = flat_.narrow(0, total_, 2).cpu();  // the step's one host read
  const int64_t bound = tail[0].item<int64_t>(), bad_adds = tail[1].item<int64_t>();
  SMOE_CHECK(bad_adds == 0,
             "exact sum of {}s over {} ranks: {} addition{} held a value that is not finite (nan or inf) or above {}: "
             "training diverged; lower the learning rate",
             what_, comm.size(), bad_adds, bad_adds == 1 ? "" : "s", kMaxAbs);
  check_bound(bound, fmt::format(" over {} ranks", comm.size()).c_str());
}

void ExactSum::result_into(const std::vector<at::Tensor>& out, double divisor) const {
  SMOE_ASSERT(out.size() == numels_.size(), "ExactSum::result_into: size mismatch");
  const double inv = std::ldexp(1.0, -kFractionBits) / divisor;
  at::Tensor v = flat_.to(at::kDouble).mul_(inv);
  for (size_t i = 0; i < out.size(); ++i) out[i].copy_(v.narrow(0, offsets_[i], numels_[i]).view(out[i].sizes()));
}

void ExactSum::zero() { flat_.zero_(); }

}  // namespace smoe::comm
