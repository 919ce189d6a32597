#include "models/cnn_gate.h"

#include <torch/torch.h>

#include <algorithm>
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
    : experts_(spec.experts),
      hidden_(spec.hidden.size() == 2 ? spec.hidden[1] : 0),
      expert_hidden_(spec.expert_hidden) {
  SMOE_CHECK(expert_hidden_ > 0,
             "gate.kind attentive: the expert architecture has no hidden layer to attend to (experts.arch small_cnn "
             "or branch have one)");
  net = register_module("net", SmallCnn(gate_net_spec(spec, 0, false)));
  query = register_module("query", torch::nn::Linear(torch::nn::LinearOptions(hidden_, hidden_).bias(false)));
  key = register_module("key", torch::nn::Linear(torch::nn::LinearOptions(expert_hidden_, hidden_).bias(false)));
}

at::Tensor AttentiveGateImpl::forward(const GateFeatures& f) {
  SMOE_ASSERT(f.expert_hidden.defined(), "attentive gate called without the experts' hidden layers");
  at::Tensor q = query->forward(net->hidden(f.inputs));                                       // [B, h]
  at::Tensor k = key->forward(f.expert_hidden);                                               // [B, K, h]
  return torch::bmm(k, q.unsqueeze(2)).squeeze(2) / std::sqrt(static_cast<double>(hidden_));  // [B, K]
}

int64_t AttentiveGateImpl::forward_macs() const {
  return net->macs() + hidden_ * hidden_ + experts_ * (expert_hidden_ * hidden_ + hidden_);
}

NoisyGateImpl::NoisyGateImpl(const GateSpec& spec) {
  net = register_module("net", SmallCnn(gate_net_spec(spec, spec.experts, true)));
  noise = register_module("noise", torch::nn::Linear(spec.hidden.at(1), spec.experts));
}

at::Tensor NoisyGateImpl::forward(const GateFeatures& f) {
  at::Tensor h = net->hidden(f.inputs);
  at::Tensor logits = net->output(h);
  if (is_training() && f.noise.defined()) logits = logits + f.noise * torch::softplus(noise->forward(h));
  return logits;
}

TemperedGateImpl::TemperedGateImpl(const GateSpec& spec) {
  net = register_module("net", SmallCnn(gate_net_spec(spec, spec.experts, true)));
  log_temperature = register_parameter("log_temperature", torch::full({1}, std::log(kInitialT)));
}

double TemperedGateImpl::temperature() const {
  return std::clamp(std::exp(log_temperature.item<double>()), kMinT, kMaxT);
}

at::Tensor TemperedGateImpl::forward(const GateFeatures& f) {
  at::Tensor t = log_temperature.exp().clamp(kMinT, kMaxT);
  at::Tensor logits = net->forward(f.inputs) / t;
  if (is_training() && f.noise.defined()) logits = logits + kNoiseStd * f.noise;
  return logits;
}

}  // namespace smoe::models
