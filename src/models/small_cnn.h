// The small CNN of Krishnamurthy et al. (Appendix B.1): one 3x3
// convolution with ReLU and 2x2 max pooling, two fully connected hidden
// layers, and an output layer. It is their experts' and gates' network; in
// smoe it is the expert architecture "small_cnn" and the trunk of the gate
// kinds "cnn" and "attentive" (models/cnn_gate.h).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <vector>

#include "models/expert.h"

namespace smoe::models {

struct SmallCnnSpec {
  std::vector<int64_t> input;    // C, H, W of what it reads (images, or a trunk's features)
  int64_t channels = 16;         // of the convolution
  std::vector<int64_t> hidden;   // the two hidden layers
  int64_t outputs = 0;           // classes or experts; 0: no output layer (the attentive gate)
  bool last_hidden_relu = true;  // the attentive gate's query layer has no activation
  void validate() const;
};

class SmallCnnImpl : public torch::nn::Module {
 public:
  explicit SmallCnnImpl(SmallCnnSpec spec);
  // The last hidden layer [B, hidden[1]].
  at::Tensor hidden(const at::Tensor& x);
  // The output layer on hidden(x) [B, outputs].
  at::Tensor output(const at::Tensor& hidden) { return out->forward(hidden); }
  at::Tensor forward(const at::Tensor& x) { return output(hidden(x)); }
  int64_t hidden_dim() const { return spec_.hidden.at(1); }
  // Multiply-accumulates for one input (convolution and linear layers).
  int64_t macs() const;
  const SmallCnnSpec& spec() const { return spec_; }

  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, out{nullptr};

 private:
  SmallCnnSpec spec_;
  int64_t pooled_ = 0;  // flattened size after pooling
};
TORCH_MODULE(SmallCnn);

// Expert architecture "small_cnn": the small CNN on the expert's input (the
// images when experts.branch_after is 0, else the shared trunk's features).
class SmallCnnExpertImpl : public ExpertModule {
 public:
  explicit SmallCnnExpertImpl(const SmallCnnSpec& spec);
  at::Tensor forward(const at::Tensor& x) override { return net->forward(x); }
  HiddenAndLogits forward_hidden(const at::Tensor& x) override;
  int64_t hidden_dim() const override { return net->hidden_dim(); }
  int64_t forward_macs() const override { return net->macs(); }
  SmallCnn net{nullptr};
};

}  // namespace smoe::models
