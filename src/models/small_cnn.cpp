#include "models/small_cnn.h"

#include <torch/torch.h>

#include "core/error.h"

namespace smoe::models {

void SmallCnnSpec::validate() const {
  SMOE_CHECK(input.size() == 3 && input[1] >= 4 && input[2] >= 4,
             "small_cnn: input must be [C, H, W] with H, W >= 4, got {} dimensions", input.size());
  SMOE_CHECK(hidden.size() == 2, "config key 'model.hidden': small_cnn has two hidden layers, got {} sizes",
             hidden.size());
  SMOE_CHECK(channels >= 1, "small_cnn: channels must be at least 1, got {}", channels);
}

SmallCnnImpl::SmallCnnImpl(SmallCnnSpec spec) : spec_(std::move(spec)) {
  spec_.validate();
  // 3x3 convolution without padding, then 2x2 max pooling (stride 2).
  const int64_t h = (spec_.input[1] - 2) / 2, w = (spec_.input[2] - 2) / 2;
  pooled_ = spec_.channels * h * w;
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(spec_.input[0], spec_.channels, 3)));
  fc1 = register_module("fc1", torch::nn::Linear(pooled_, spec_.hidden[0]));
  fc2 = register_module("fc2", torch::nn::Linear(spec_.hidden[0], spec_.hidden[1]));
  if (spec_.outputs > 0) out = register_module("out", torch::nn::Linear(spec_.hidden[1], spec_.outputs));
}

at::Tensor SmallCnnImpl::hidden(const at::Tensor& x) {
  at::Tensor y = torch::max_pool2d(torch::relu(conv->forward(x)), 2, 2).flatten(1);
  y = fc2->forward(torch::relu(fc1->forward(y)));
  return spec_.last_hidden_relu ? torch::relu(y) : y;
}

int64_t SmallCnnImpl::macs() const {
  const int64_t conv_out = (spec_.input[1] - 2) * (spec_.input[2] - 2) * spec_.channels;
  int64_t m = conv_out * spec_.input[0] * 9 + pooled_ * spec_.hidden[0] + spec_.hidden[0] * spec_.hidden[1];
  if (spec_.outputs > 0) m += spec_.hidden[1] * spec_.outputs;
  return m;
}

SmallCnnExpertImpl::SmallCnnExpertImpl(const SmallCnnSpec& spec) { net = register_module("net", SmallCnn(spec)); }

HiddenAndLogits SmallCnnExpertImpl::forward_hidden(const at::Tensor& x) {
  at::Tensor h = net->hidden(x);
  return {h, net->output(h)};
}

}  // namespace smoe::models
