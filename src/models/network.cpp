#include "models/network.h"

#include <torch/torch.h>

#include "core/error.h"
#include "models/torch_compat.h"

namespace nn = torch::nn;

namespace smoe::models {
namespace {

int64_t conv_out(int64_t size, int64_t kernel, int64_t stride, int64_t pad) {
  return (size + 2 * pad - kernel) / stride + 1;
}

// MACs of a convolution on `in` (updated to the output shape).
int64_t conv_macs(const nn::Conv2dImpl& conv, Shape& in) {
  const auto& o = conv.options;
  const int64_t k0 = (*o.kernel_size())[0], k1 = (*o.kernel_size())[1];
  const int64_t s0 = (*o.stride())[0], s1 = (*o.stride())[1];
  const auto& pad = compat::variant_get<torch::ExpandingArray<2>>(o.padding());
  const int64_t h = conv_out(in[1], k0, s0, (*pad)[0]), w = conv_out(in[2], k1, s1, (*pad)[1]);
  const int64_t macs = o.out_channels() * h * w * (o.in_channels() / o.groups()) * k0 * k1;
  in = {o.out_channels(), h, w};
  return macs;
}

// `groups` > 1 builds `groups` independent copies side by side (channels
// [g*in, (g+1)*in) -> [g*out, (g+1)*out)): fused_branch.h.
nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride, int64_t groups) {
  return nn::Conv2d(
      nn::Conv2dOptions(in * groups, out * groups, 3).stride(stride).padding(1).bias(false).groups(groups));
}

// conv3x3 -> BN -> ReLU (the tiny-ResNet stem, and every plain-CNN block),
// optionally followed by 2x2 max pooling.
class ConvBlockImpl : public BlockImpl {
 public:
  ConvBlockImpl(int64_t in, int64_t out, bool pool, int64_t groups) : pool_(pool) {
    conv = register_module("conv", conv3x3(in, out, 1, groups));
    bn = register_module("bn", nn::BatchNorm2d(out * groups));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor y = torch::relu(bn->forward(conv->forward(x)));
    return pool_ ? torch::max_pool2d(y, 2) : y;
  }
  int64_t macs(Shape& in) const override {
    int64_t m = conv_macs(*conv, in);
    if (pool_) in = {in[0], in[1] / 2, in[2] / 2};
    return m;
  }
  nn::Conv2d conv{nullptr};
  nn::BatchNorm2d bn{nullptr};

 private:
  bool pool_;
};

// The ResNet BasicBlock: two 3x3 convolutions and a shortcut (1x1 conv + BN
// when the shape changes).
class BasicBlockImpl : public nn::Module {
 public:
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride, int64_t groups) {
    conv1 = register_module("conv1", conv3x3(in, out, stride, groups));
    bn1 = register_module("bn1", nn::BatchNorm2d(out * groups));
    conv2 = register_module("conv2", conv3x3(out, out, 1, groups));
    bn2 = register_module("bn2", nn::BatchNorm2d(out * groups));
    if (stride != 1 || in != out) {
      down_conv = register_module(
          "down_conv",
          nn::Conv2d(nn::Conv2dOptions(in * groups, out * groups, 1).stride(stride).bias(false).groups(groups)));
      down_bn = register_module("down_bn", nn::BatchNorm2d(out * groups));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = torch::relu(bn1->forward(conv1->forward(x)));
    y = bn2->forward(conv2->forward(y));
    at::Tensor shortcut = down_conv ? down_bn->forward(down_conv->forward(x)) : x;
    return torch::relu(y + shortcut);
  }
  int64_t macs(Shape& in) const {
    Shape branch = in;
    int64_t m = conv_macs(*conv1, branch) + conv_macs(*conv2, branch);
    if (down_conv) {
      Shape s = in;
      m += conv_macs(*down_conv, s);
    }
    in = branch;
    return m;
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, down_conv{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, down_bn{nullptr};
};

class StageImpl : public BlockImpl {
 public:
  StageImpl(int64_t in, int64_t out, int64_t blocks, int64_t stride, int64_t groups) {
    for (int64_t i = 0; i < blocks; ++i) {
      auto b = std::make_shared<BasicBlockImpl>(i == 0 ? in : out, out, i == 0 ? stride : 1, groups);
      register_module(std::to_string(i), b);
      blocks_.push_back(b);
    }
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor y = x;
    for (auto& b : blocks_) y = b->forward(y);
    return y;
  }
  int64_t macs(Shape& in) const override {
    int64_t m = 0;
    for (const auto& b : blocks_) m += b->macs(in);
    return m;
  }

 private:
  std::vector<std::shared_ptr<BasicBlockImpl>> blocks_;
};

std::vector<int64_t> stage_depths(int64_t depth) {
  if (depth == 10) return {1, 1, 1, 1};
  if (depth == 18) return {2, 2, 2, 2};
  return {3, 4, 6, 3};  // 34
}

}  // namespace

std::shared_ptr<BlockImpl> make_block(const NetworkSpec& s, int64_t b, int64_t groups) {
  SMOE_CHECK(b >= 0 && b < NetworkSpec::kBlocks && groups >= 1, "block {} x {} groups", b, groups);
  const int64_t w = s.width;
  const int64_t widths[] = {w, w, 2 * w, 4 * w, 8 * w};
  if (s.arch == NetworkArch::plain_cnn) {
    const int64_t in = b == 0 ? s.input[0] : widths[b - 1];
    return std::make_shared<ConvBlockImpl>(in, widths[b], /*pool=*/b == 1 || b == 2, groups);
  }
  if (b == 0) return std::make_shared<ConvBlockImpl>(s.input[0], w, false, groups);
  return std::make_shared<StageImpl>(widths[b - 1], widths[b], stage_depths(s.depth)[b - 1], b == 1 ? 1 : 2, groups);
}

void NetworkSpec::validate() const {
  SMOE_CHECK(depth == 10 || depth == 18 || depth == 34, "model.depth: expected 10, 18 or 34, got {}", depth);
  SMOE_CHECK(width >= 1, "model.width must be positive, got {}", width);
  SMOE_CHECK(input.size() == 3 && input[0] >= 1 && input[1] >= 8 && input[2] >= 8,
             "model input must be [C, H, W] with C >= 1 and H, W >= 8 (the network halves them down to 1 x 1), got "
             "[{}]",
             fmt::join(input, ", "));
  SMOE_CHECK(num_classes >= 2, "a classifier needs at least 2 classes, got {}", num_classes);
}

BackboneImpl::BackboneImpl(const NetworkSpec& spec, int64_t first) : spec_(spec), first_(first) {
  spec_.validate();
  SMOE_CHECK(first >= 0 && first < NetworkSpec::kBlocks,
             "experts.branch_after must be in [0, {}) for a {}-block network, got {}", NetworkSpec::kBlocks,
             NetworkSpec::kBlocks, first);
  for (int64_t b = first; b < NetworkSpec::kBlocks; ++b)
    blocks_.push_back(register_module("block" + std::to_string(b), make_block(spec_, b)));
  fc_ = register_module("fc", nn::Linear(spec_.prelogit_dim(), spec_.num_classes));
}

at::Tensor BackboneImpl::blocks(at::Tensor x, int64_t from, int64_t to) {
  SMOE_ASSERT(from >= first_ && to <= NetworkSpec::kBlocks && from <= to, "blocks [{}, {}) of a backbone from {}", from,
              to, first_);
  for (int64_t b = from; b < to; ++b) x = blocks_[static_cast<size_t>(b - first_)]->forward(x);
  return x;
}

at::Tensor BackboneImpl::prelogits(const at::Tensor& h) { return torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1); }

HiddenAndLogits BackboneImpl::forward_hidden(const at::Tensor& x) {
  at::Tensor h = prelogits(blocks(x, first_, NetworkSpec::kBlocks));
  return {h, classify(h)};
}

at::Tensor BackboneImpl::forward(const at::Tensor& x) {
  return classify(prelogits(blocks(x, first_, NetworkSpec::kBlocks)));
}

Shape input_shape_of(const NetworkSpec& spec, int64_t block) {
  SMOE_CHECK(block >= 0 && block <= NetworkSpec::kBlocks, "the input of block {}: a network has blocks 0 to {}", block,
             NetworkSpec::kBlocks - 1);
  // Output shape of each block: the stem keeps the resolution; tiny-ResNet
  // stages 2-4 halve it with stride-2 3x3 convolutions (ceil), the plain
  // CNN's blocks 1 and 2 with 2x2 max pooling (floor).
  const int64_t w = spec.width;
  const int64_t widths[] = {w, w, 2 * w, 4 * w, 8 * w};
  Shape s = spec.input;
  for (int64_t b = 0; b < block; ++b) {
    s[0] = widths[b];
    const bool halve = spec.arch == NetworkArch::plain_cnn ? (b == 1 || b == 2) : b >= 2;
    if (halve) {
      s[1] = spec.arch == NetworkArch::plain_cnn ? s[1] / 2 : (s[1] + 1) / 2;
      s[2] = spec.arch == NetworkArch::plain_cnn ? s[2] / 2 : (s[2] + 1) / 2;
    }
  }
  return s;
}

Shape BackboneImpl::input_shape_of(int64_t block) const { return models::input_shape_of(spec_, block); }

TrunkImpl::TrunkImpl(const NetworkSpec& spec, int64_t blocks) : spec_(spec) {
  spec_.validate();
  SMOE_CHECK(blocks >= 1 && blocks < NetworkSpec::kBlocks, "a shared trunk holds 1 to {} blocks, got {}",
             NetworkSpec::kBlocks - 1, blocks);
  for (int64_t b = 0; b < blocks; ++b)
    blocks_.push_back(register_module("block" + std::to_string(b), make_block(spec_, b)));
}

at::Tensor TrunkImpl::forward(at::Tensor x) {
  for (auto& b : blocks_) x = b->forward(x);
  return x;
}

Shape TrunkImpl::output_shape() const {
  Shape s = spec_.input;
  for (const auto& b : blocks_) b->macs(s);
  return s;
}

int64_t TrunkImpl::macs() const {
  Shape s = spec_.input;
  int64_t m = 0;
  for (const auto& b : blocks_) m += b->macs(s);
  return m;
}

int64_t BackboneImpl::macs(int64_t from, int64_t to) const {
  SMOE_ASSERT(from >= first_ && to <= NetworkSpec::kBlocks, "macs of blocks [{}, {})", from, to);
  Shape s = input_shape_of(from);
  int64_t m = 0;
  for (int64_t b = from; b < to; ++b) m += blocks_[static_cast<size_t>(b - first_)]->macs(s);
  return m;
}

void BackboneImpl::copy_from(BackboneImpl& other) {
  torch::NoGradGuard no_grad;
  // A deeper network (experts.depth above the base's) has residual blocks the
  // other lacks: they start as the identity (the last BatchNorm's scale 0,
  // so the block adds nothing to its shortcut), and the network computes
  // what the other computes.
  const bool deeper = spec_.arch == NetworkArch::tiny_resnet && spec_.depth > other.spec().depth;
  auto src_params = other.named_parameters(true);
  auto src_buffers = other.named_buffers(true);
  for (auto& p : named_parameters(true)) {
    const at::Tensor* s = src_params.find(p.key());
    if (!s && deeper) {
      if (p.key().size() >= 11 && p.key().compare(p.key().size() - 11, 11, ".bn2.weight") == 0) p.value().zero_();
      continue;
    }
    SMOE_CHECK(s && s->sizes() == p.value().sizes(), "cannot initialise {} from the base model", p.key());
    p.value().copy_(*s);
  }
  for (auto& b : named_buffers(true)) {
    const at::Tensor* s = src_buffers.find(b.key());
    if (!s && deeper) continue;  // a fresh BatchNorm's statistics
    SMOE_CHECK(s && s->sizes() == b.value().sizes(), "cannot initialise buffer {} from the base model", b.key());
    b.value().copy_(*s);
  }
}

std::vector<at::Tensor> BackboneImpl::block_parameters(int64_t from, int64_t to) {
  std::vector<at::Tensor> out;
  for (int64_t b = std::max(from, first_); b < to; ++b)
    for (auto& p : blocks_[static_cast<size_t>(b - first_)]->parameters()) out.push_back(p);
  return out;
}

}  // namespace smoe::models
