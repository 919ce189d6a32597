#include "models/fused_branch.h"

#include <torch/torch.h>

#include "core/error.h"
#include "models/network.h"

namespace smoe::models {
namespace {

// The expert's name of a stacked tensor (a module's own parameters cannot
// hold a dot).
std::string expert_name(const std::string& fused_name) {
  if (fused_name == "fc_weight") return "fc.weight";
  if (fused_name == "fc_bias") return "fc.bias";
  return fused_name;
}

// The classifier's tensors stack one slice per expert (a new leading
// dimension); everything else concatenates along the channels.
bool one_per_expert(const std::string& fused_name) { return fused_name == "fc_weight" || fused_name == "fc_bias"; }

}  // namespace

FusedBranchImpl::FusedBranchImpl(const std::vector<std::shared_ptr<BackboneImpl>>& experts)
    : k_(static_cast<int64_t>(experts.size())) {
  SMOE_CHECK(k_ >= 1, "fusing experts: none given");
  const NetworkSpec& spec = experts.front()->spec();
  const int64_t first = experts.front()->first_block();
  for (const auto& e : experts)
    SMOE_CHECK(e->first_block() == first && e->spec().arch == spec.arch && e->spec().depth == spec.depth &&
                   e->spec().width == spec.width && e->spec().num_classes == spec.num_classes,
               "fusing experts: they must share one architecture and branch point");
  for (int64_t b = first; b < NetworkSpec::kBlocks; ++b)
    blocks_.push_back(register_module("block" + std::to_string(b), make_block(spec, b, k_)));
  fc_weight_ = register_parameter("fc_weight", torch::empty({k_, spec.num_classes, spec.prelogit_dim()}));
  fc_bias_ = register_parameter("fc_bias", torch::empty({k_, spec.num_classes}));

  torch::NoGradGuard no_grad;
  std::vector<torch::OrderedDict<std::string, at::Tensor>> params, buffers;
  for (const auto& e : experts) {
    params.push_back(e->named_parameters(true));
    buffers.push_back(e->named_buffers(true));
  }
  auto stack = [&](const std::string& name, at::Tensor& into,
                   const std::vector<torch::OrderedDict<std::string, at::Tensor>>& from) {
    std::vector<at::Tensor> parts;
    for (const auto& d : from) {
      const at::Tensor* t = d.find(expert_name(name));
      SMOE_CHECK(t != nullptr, "fusing experts: an expert has no '{}'", expert_name(name));
      parts.push_back(*t);
    }
    if (into.dim() == 0) {  // num_batches_tracked: the same count in every expert
      into.copy_(parts.front());
      return;
    }
    at::Tensor stacked = one_per_expert(name) ? torch::stack(parts) : torch::cat(parts);
    SMOE_CHECK(stacked.sizes() == into.sizes(), "fusing experts: '{}' stacked has another shape than fused", name);
    into.copy_(stacked);
  };
  for (auto& p : named_parameters(true)) stack(p.key(), p.value(), params);
  for (auto& b : named_buffers(true)) stack(b.key(), b.value(), buffers);
  const auto device = experts.front()->parameters().front().device();
  to(device);
}

at::Tensor FusedBranchImpl::forward(const at::Tensor& x) {
  // Every expert reads the same trunk features: copy g on channels [g*C, (g+1)*C).
  at::Tensor h = k_ == 1 ? x : x.repeat({1, k_, 1, 1});
  for (auto& b : blocks_) h = b->forward(h);
  const int64_t batch = h.size(0);
  // [B, K*D] pooled -> [K, B, D] x [K, D, classes] -> [B, K, classes]
  at::Tensor pooled = torch::adaptive_avg_pool2d(h, {1, 1}).view({batch, k_, -1}).transpose(0, 1);
  at::Tensor logits = torch::baddbmm(fc_bias_.unsqueeze(1), pooled, fc_weight_.transpose(1, 2));
  return logits.transpose(0, 1);
}

void FusedBranchImpl::unstack_into(const std::vector<std::shared_ptr<BackboneImpl>>& experts) {
  SMOE_CHECK(static_cast<int64_t>(experts.size()) == k_, "unfusing {} experts into {}", k_, experts.size());
  torch::NoGradGuard no_grad;
  std::vector<torch::OrderedDict<std::string, at::Tensor>> params, buffers;
  for (const auto& e : experts) {
    params.push_back(e->named_parameters(true));
    buffers.push_back(e->named_buffers(true));
  }
  auto unstack = [&](const std::string& name, const at::Tensor& from,
                     std::vector<torch::OrderedDict<std::string, at::Tensor>>& into) {
    for (int64_t k = 0; k < k_; ++k) {
      at::Tensor* t = into[static_cast<size_t>(k)].find(expert_name(name));
      SMOE_CHECK(t != nullptr, "unfusing experts: an expert has no '{}'", expert_name(name));
      if (from.dim() == 0)
        t->copy_(from);
      else
        t->copy_(one_per_expert(name) ? from.select(0, k) : from.chunk(k_, 0)[static_cast<size_t>(k)]);
    }
  };
  for (const auto& p : named_parameters(true)) unstack(p.key(), p.value(), params);
  for (const auto& b : named_buffers(true)) unstack(b.key(), b.value(), buffers);
}

}  // namespace smoe::models
