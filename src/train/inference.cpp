#include "train/inference.h"

#include <torch/torch.h>

#include "core/heartbeat.h"

#include "comm/tensor_collectives.h"
#include "data/batch.h"
#include "data/sampler.h"

namespace smoe::train {
namespace {

std::vector<std::vector<int64_t>> id_batches(int64_t n, int64_t batch) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  return data::make_batches(ids, batch, false);
}

}  // namespace

at::Tensor reorder_by_id(const at::Tensor& rows, const at::Tensor& ids) {
  at::Tensor out = torch::empty_like(rows);
  out.index_copy_(0, ids.to(rows.device()), rows);
  return out;
}

BaseOutputs base_outputs(models::Backbone& base, const data::Dataset& ds, comm::Communicator& comm, int64_t batch,
                         int root) {
  torch::NoGradGuard no_grad;
  base->eval();
  const auto device = base->parameters().front().device();
  auto batches = id_batches(ds.size(), batch);
  std::vector<at::Tensor> ids, pre, logits;
  for (int64_t b : data::round_robin(static_cast<int64_t>(batches.size()), comm.rank(), comm.size())) {
    heartbeat::beat("embedding batch");
    data::Batch x = data::make_batch(ds, batches[static_cast<size_t>(b)], data::Transform{});
    at::Tensor h = base->prelogits(base->blocks(x.images.to(device), 0, models::NetworkSpec::kBlocks));
    ids.push_back(x.ids);
    pre.push_back(h.cpu());
    logits.push_back(base->classify(h).cpu());
  }
  const int64_t D = base->spec().prelogit_dim(), C = base->spec().num_classes;
  auto cat = [](std::vector<at::Tensor>& v, at::Tensor empty) { return v.empty() ? empty : torch::cat(v); };
  at::Tensor my_ids = cat(ids, torch::empty({0}, torch::kLong));
  at::Tensor my_pre = cat(pre, torch::empty({0, D}));
  at::Tensor my_logits = cat(logits, torch::empty({0, C}));
  const int gather_root = root < 0 ? 0 : root;
  at::Tensor all_ids = comm::gather_rows(comm, my_ids, gather_root);
  at::Tensor all_pre = comm::gather_rows(comm, my_pre, gather_root);
  at::Tensor all_logits = comm::gather_rows(comm, my_logits, gather_root);
  BaseOutputs out;
  out.local_ids = my_ids;
  out.local_prelogits = my_pre;
  if (comm.rank() == gather_root) {
    out.ids = torch::arange(ds.size(), torch::kLong);
    out.prelogits = reorder_by_id(all_pre, all_ids);
    out.logits = reorder_by_id(all_logits, all_ids);
  }
  if (root < 0) {
    out.ids = comm::broadcast_tensor(comm, out.ids, 0);
    out.prelogits = comm::broadcast_tensor(comm, out.prelogits, 0);
    out.logits = comm::broadcast_tensor(comm, out.logits, 0);
  }
  return out;
}

}  // namespace smoe::train
