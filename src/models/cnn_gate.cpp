#include "models/cnn_gate.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace smoe::models {
namespace {

SmallCnnSpec gate_net_spec(const GateSpec& s, int64_t outputs, bool last_hidden_relu) {
  SmallCnnSpec n;
  n.input = s.input;
  n.channels = s.width;
  n.hidden = s.hidden;
  n.outputs = outputs;
  n.last_hidden_relu = last_hidden_relu;
  return n;
}

}  // namespace

CnnGateImpl::CnnGateImpl(const GateSpec& spec) {
  net = register_module("net", SmallCnn(gate_net_spec(spec, spec.experts, true)));
}

AttentiveGateImpl::AttentiveGateImpl(const GateSpec& spec)
    : experts_(spec.experts), hidden_(spec.hidden.size() == 2 ? spec.hidden[1] : 0), expert_hidden_(spec.expert_hidden) {
  SMOE_CHECK(expert_hidden_ > 0,
             "gate.kind attentive: the expert architecture has no hidden layer to attend to (experts.arch small_cnn "
             "or branch have one)");
  net = register_module("net", SmallCnn(gate_net_spec(spec, 0, false)));
  query = register_module("query", torch::nn::Linear(torch::nn::LinearOptions(hidden_, hidden_).bias(false)));
  key = register_module("key", torch::nn::Linear(torch::nn::LinearOptions(expert_hidden_, hidden_).bias(false)));
}

at::Tensor AttentiveGateImpl::forward(const GateFeatures& f) {
  SMOE_ASSERT(f.expert_hidden.defined(), "attentive gate called without the experts' hidden layers");
  at::Tensor q = query->forward(net->hidden(f.inputs));  // [B, h]
  at::Tensor k = key->forward(f.expert_hidden);          // [B, K, h]
  return torch::bmm(k, q.unsqueeze(2)).squeeze(2) / std::sqrt(static_cast<double>(hidden_));  // [B, K]
}

int64_t AttentiveGateImpl::forward_macs() const {
  return net->macs() + hidden_ * hidden_ + experts_ * (expert_hidden_ * hidden_ + hidden_);
}

}  // namespace smoe::models
