#include "models/base_tail_gate.h"

#include <torch/torch.h>

#include "models/moe.h"

namespace smoe::models {

BaseTailGateImpl::BaseTailGateImpl(Backbone tail, Gate inner, bool normalize) : normalize_(normalize) {
  tail_ = register_module("tail", std::move(tail));
  inner_ = register_module("inner", std::move(inner));
  for (auto& p : tail_->parameters()) p.set_requires_grad(false);
  tail_->eval();
}

at::Tensor BaseTailGateImpl::forward(const GateFeatures& f) {
  at::Tensor h, logits;
  {
    torch::NoGradGuard frozen;
    h = tail_->prelogits(tail_->blocks(f.inputs, tail_->first_block(), NetworkSpec::kBlocks));
    logits = tail_->classify(h);
  }
  return inner_->forward(GateFeatures(normalize_ ? normalize_rows(h) : h, logits));
}

int64_t BaseTailGateImpl::forward_macs() const {
  return tail_->macs(tail_->first_block(), NetworkSpec::kBlocks) + tail_->head_macs() + inner_->forward_macs();
}

void BaseTailGateImpl::train(bool on) {
  torch::nn::Module::train(on);
  tail_->eval();
}

}  // namespace smoe::models
