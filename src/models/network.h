// The networks: the paper's tiny-ResNet family (ResNet without the first two
// down-samplings: a 3x3 stem at full resolution, four stages of BasicBlocks at
// widths w, 2w, 4w, 8w, the last three starting with a stride-2 block; Royer
// et al. Section 4) and a small plain CNN with the same five-block layout.
//
// A network is a chain of blocks (0 = stem, 1..4 = stages) followed by the
// head (global average pooling -> pre-logits -> linear classifier). A
// Backbone may hold only blocks [first, 5): that is an expert, which takes
// the frozen shared trunk's features (the output of block first-1) as input.
// Parameter names ("block3.0.conv1.weight", "fc.weight") are the same in the
// base model and in its experts, so an expert is initialised from the base by
// name (Algorithm 1: theta_{e_k} <- theta_phi).
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

#include "models/expert.h"
#include "models/network_spec.h"

namespace smoe::models {

// [C, H, W] of an activation.
using Shape = std::vector<int64_t>;

// Shape of the input of block `block` of the network `spec` ([C, H, W]).
Shape input_shape_of(const NetworkSpec& spec, int64_t block);

// A block that knows its multiply-accumulate count for a given input shape
// (convolutions and linear layers; BatchNorm folds into the convolution at
// inference, ReLU and pooling are not MACs).
class BlockImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // MACs for one image with input `in`; `in` becomes the output shape.
  virtual int64_t macs(Shape& in) const = 0;
};

// Block b (0 = stem, 1..4 = stages) of the network `spec`; `groups` > 1
// builds that many independent copies side by side as grouped convolutions
// and BatchNorms over the stacked channels (copy g on channels
// [g*C, (g+1)*C) of every activation; models/fused_branch.h).
std::shared_ptr<BlockImpl> make_block(const NetworkSpec& spec, int64_t block, int64_t groups = 1);

// A Backbone is also the default expert architecture ("branch": the base's
// blocks after experts.branch_after), hence ExpertModule.
class BackboneImpl : public ExpertModule {
 public:
  // Blocks [first, kBlocks) and the head.
  BackboneImpl(const NetworkSpec& spec, int64_t first = 0);

  const NetworkSpec& spec() const { return spec_; }
  int64_t first_block() const { return first_; }

  // Blocks [from, to) applied to x (the input of block `from`).
  at::Tensor blocks(at::Tensor x, int64_t from, int64_t to);
  // The head: pooled pre-logits [B, 8w] and logits [B, classes].
  at::Tensor prelogits(const at::Tensor& last_block_output);
  at::Tensor classify(const at::Tensor& prelogits) { return fc_->forward(prelogits); }
  // Logits of x, the input of block first_block().
  at::Tensor forward(const at::Tensor& x) override;
  // ExpertModule: the pre-logits are the last hidden layer.
  HiddenAndLogits forward_hidden(const at::Tensor& x) override;
  int64_t hidden_dim() const override { return spec_.prelogit_dim(); }
  // ExpertModule: MACs of blocks [first, kBlocks) and the head; Algorithm 1's
  // initialisation theta_{e_k} <- theta_phi is copy_from.
  int64_t forward_macs() const override { return macs(first_, NetworkSpec::kBlocks) + head_macs(); }
  void init_from_base(BackboneImpl& base) override { copy_from(base); }

  // Shape of the input of block b ([C, H, W]).
  Shape input_shape_of(int64_t block) const;
  // MACs of blocks [from, to) for one image; MACs of the classifier.
  int64_t macs(int64_t from, int64_t to) const;
  int64_t head_macs() const { return spec_.prelogit_dim() * spec_.num_classes; }

  // Parameters and buffers of blocks [first, kBlocks) and the head, copied by
  // name from `other` (which must hold them, except the extra residual blocks
  // of a deeper tiny_resnet: those start as the identity).
  void copy_from(BackboneImpl& other);
  // The parameters of blocks [from, to).
  std::vector<at::Tensor> block_parameters(int64_t from, int64_t to);

 private:
  NetworkSpec spec_;
  int64_t first_;
  std::vector<std::shared_ptr<BlockImpl>> blocks_;  // index b - first_
  torch::nn::Linear fc_{nullptr};
};
TORCH_MODULE(Backbone);

// Blocks [0, n) of a network alone (no head): the shared trunk a jointly
// trained MoE trains with its gate and experts (LEMUR's "shared
// convolutional trunk"), named as in the Backbone ("block0", ...).
class TrunkImpl : public torch::nn::Module {
 public:
  TrunkImpl(const NetworkSpec& spec, int64_t blocks);
  at::Tensor forward(at::Tensor x);
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  // Shape of its output ([C, H, W]) and MACs for one image.
  Shape output_shape() const;
  int64_t macs() const;

 private:
  NetworkSpec spec_;
  std::vector<std::shared_ptr<BlockImpl>> blocks_;
};
TORCH_MODULE(Trunk);

}  // namespace smoe::models
