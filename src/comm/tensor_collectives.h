// libtorch adapters for the Communicator: tensors in, Buffers out. Host
// tensors go through MPI (or threads), CUDA tensors through NCCL when the
// communicator takes device buffers (a DeviceRouter with device collectives
// on); any other device tensor goes through a host copy.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "comm/communicator.h"

namespace smoe::comm {

// A view of a contiguous tensor as a Buffer (throws for other layouts/dtypes).
Buffer buffer_of(const at::Tensor& t);

void allreduce(Communicator& comm, const at::Tensor& t, ReduceOp op = ReduceOp::sum);
void broadcast(Communicator& comm, const at::Tensor& t, int root);

// Allreduce of a matrix [N, ...] in blocks of at most `rows` rows, so that
// the communication buffers stay bounded for large N. In place.
void allreduce_in_chunks(Communicator& comm, const at::Tensor& t, int64_t rows, ReduceOp op = ReduceOp::sum);

// Broadcasts a tensor whose dtype and shape only `root` knows: root passes
// it, the others pass anything (ignored) and receive a new CPU tensor.
at::Tensor broadcast_tensor(Communicator& comm, const at::Tensor& t, int root);

// Concatenates every rank's rows ([n_r, ...], same trailing shape and dtype)
// on `root` in rank order; other ranks get an undefined tensor.
at::Tensor gather_rows(Communicator& comm, const at::Tensor& local, int root);
// Puts rows gathered from ranks (`ids` [n]: each row's id, in any order) in id order.
at::Tensor reorder_by_id(const at::Tensor& rows, const at::Tensor& ids);

// Exact, order-independent sums of float tensors across ranks (and across
// several local additions): values are accumulated as 64-bit fixed point
// (2^-40 resolution) so that the result does not depend on how the terms
// were split among ranks — the basis of rank-count-invariant data-parallel
// training (docs/architecture.md, "Determinism").
class ExactSum {
 public:
  static constexpr int kFractionBits = 40;
  // Largest magnitude one term may have (keeps many terms far from int64 overflow).
  static constexpr double kMaxAbs = 1 << 20;
  // The sum stays exact while the magnitudes of the terms added into one
  // accumulator, over every rank, stay below 2^63 / 2^40 = 2^23. A bound on
  // that sum (each add's largest |term|, in units of 2^-20, rounded up)
  // travels in one more int64 slot through the allreduce; add() and
  // allreduce() fail with a clear error once it reaches 2^23 instead of
  // letting the int64 sums wrap around silently.
  static constexpr double kMaxTotal = 1 << 23;
  //
  // On the host, add() refuses a bad term at once (not finite, or above
  // kMaxAbs), naming it. On a device it reads nothing back, so that a
  // training step keeps the device's queue full: a bad term is counted in a
  // last int64 slot (its values zeroed, its bound capped), and allreduce()
  // — one host read per step — reports it.

  // Shapes of the tensors to be summed (e.g. every parameter's gradient).
  explicit ExactSum(const std::vector<at::Tensor>& like);
  // Adds terms[i] into accumulator i. `what` names the terms in errors.
  // Reads nothing back from a device (see above).
  void add(const std::vector<at::Tensor>& terms, const char* what = "value");
  // Sums the accumulators over all ranks; then fails, on every rank, if a
  // term added on a device was bad or the bound reached kMaxTotal.
  void allreduce(Communicator& comm);
  // Writes accumulator i / divisor into out[i] (float tensors of the same shape).
  void result_into(const std::vector<at::Tensor>& out, double divisor) const;
  void zero();

 private:
  void check_bound(int64_t bound, const char* where) const;

  at::Tensor flat_;  // int64 [total + 2]: the sums, the magnitude bound, the count of bad additions
  int64_t total_ = 0;
  std::string what_ = "value";
  std::vector<int64_t> offsets_;  // start of each tensor in flat_
  std::vector<int64_t> numels_;
};

}  // namespace smoe::comm
