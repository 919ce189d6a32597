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

at::Tensor trunk_features(models::Backbone& base, const data::Dataset& ds, int64_t branch_after, int64_t batch,
                          comm::Communicator& comm) {
  torch::NoGradGuard no_grad;
  base->eval();
  const auto device = base->parameters().front().device();
  const models::Shape s = base->input_shape_of(branch_after);
  const int64_t row = s[0] * s[1] * s[2];
  auto batches = id_batches(ds.size(), batch);
  const int P = comm.size();
  // Rank r computes batches r, r + P, ... into slot j of its block; blocks are
  // padded to the same number of slots so that one allgather moves them all.
  const int64_t slots = (static_cast<int64_t>(batches.size()) + P - 1) / P;
  at::Tensor mine = torch::zeros({slots * batch, row});
  int64_t j = 0;
  for (int64_t b : data::round_robin(static_cast<int64_t>(batches.size()), comm.rank(), P)) {
    heartbeat::beat("trunk features batch");
    const auto& ids = batches[static_cast<size_t>(b)];
    data::Batch x = data::make_batch(ds, ids, data::Transform{});
    at::Tensor f = base->blocks(x.images.to(device), 0, branch_after).reshape({static_cast<int64_t>(ids.size()), row});
    mine.narrow(0, j++ * batch, static_cast<int64_t>(ids.size())).copy_(f);
  }
  at::Tensor all = torch::empty({P * slots * batch, row});
  comm.allgather(comm::buffer_of(mine), comm::buffer_of(all));
  mine = at::Tensor();
  at::Tensor out = torch::empty({ds.size(), s[0], s[1], s[2]});
  at::Tensor flat = out.view({ds.size(), row});
  for (size_t b = 0; b < batches.size(); ++b) {
    const int64_t owner = static_cast<int64_t>(b) % P, slot = static_cast<int64_t>(b) / P;
    const int64_t n = static_cast<int64_t>(batches[b].size());
    flat.narrow(0, batches[b].front(), n).copy_(all.narrow(0, (owner * slots + slot) * batch, n));
  }
  return out.to(device);
}

at::Tensor logits_of(models::ExpertModule& net, const at::Tensor& inputs, int64_t batch) {
  torch::NoGradGuard no_grad;
  net.eval();
  std::vector<at::Tensor> out;
  for (int64_t start = 0; start < inputs.size(0); start += batch) {
    heartbeat::beat("logits batch");
    out.push_back(net.forward(inputs.narrow(0, start, std::min(batch, inputs.size(0) - start))));
  }
  return torch::cat(out);
}

}  // namespace smoe::train
