#include "models/backbones.h"

#include <torch/torch.h>

#include "core/error.h"

namespace smoe::models {
namespace {

int64_t conv_macs(int64_t in_c, int64_t out_c, int64_t k, int64_t out_h, int64_t out_w) {
  return in_c * out_c * k * k * out_h * out_w;
}

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).padding(k / 2).bias(true));
}

void check_input(const BackboneSpec& s, const char* name) {
  SMOE_CHECK(s.input.size() == 3 && s.input[0] >= 1 && s.input[1] >= 1 && s.input[2] >= 1,
             "expert architecture {}: input must be [C, H, W]", name);
  SMOE_CHECK(s.width >= 2, "expert architecture {}: model.width must be at least 2, got {}", name, s.width);
}

// 2x2 max or average pooling, where the map is at least 4x4.
struct Pool {
  bool on = false;
  void plan(int64_t& h, int64_t& w) {
    on = h >= 4 && w >= 4;
    if (on) h /= 2, w /= 2;
  }
};

class AlexNetImpl : public ExpertModule {
 public:
  explicit AlexNetImpl(const BackboneSpec& s) {
    check_input(s, "alexnet");
    const int64_t w = s.width;
    int64_t h = s.input[1], wd = s.input[2];
    c1 = register_module("conv1", conv(s.input[0], w, 3));
    macs_ += conv_macs(s.input[0], w, 3, h, wd);
    p1.plan(h, wd);
    c2 = register_module("conv2", conv(w, 2 * w, 3));
    macs_ += conv_macs(w, 2 * w, 3, h, wd);
    p2.plan(h, wd);
    c3 = register_module("conv3", conv(2 * w, 4 * w, 3));
    macs_ += conv_macs(2 * w, 4 * w, 3, h, wd);
    side_ = std::min<int64_t>(2, std::min(h, wd));
    const int64_t flat = 4 * w * side_ * side_;
    fc1 = register_module("fc1", torch::nn::Linear(flat, s.hidden));
    fc2 = register_module("fc2", torch::nn::Linear(s.hidden, s.classes));
    macs_ += flat * s.hidden + s.hidden * s.classes;
    hidden_ = s.hidden;
  }
  HiddenAndLogits forward_hidden(const at::Tensor& x) override {
    at::Tensor y = torch::relu(c1->forward(x));
    if (p1.on) y = torch::max_pool2d(y, 2, 2);
    y = torch::relu(c2->forward(y));
    if (p2.on) y = torch::max_pool2d(y, 2, 2);
    y = torch::relu(c3->forward(y));
    y = torch::adaptive_avg_pool2d(y, {side_, side_}).flatten(1);
    at::Tensor h = torch::relu(fc1->forward(y));
    return {h, fc2->forward(h)};
  }
  at::Tensor forward(const at::Tensor& x) override { return forward_hidden(x).logits; }
  int64_t forward_macs() const override { return macs_; }
  int64_t hidden_dim() const override { return hidden_; }

 private:
  torch::nn::Conv2d c1{nullptr}, c2{nullptr}, c3{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  Pool p1, p2;
  int64_t side_ = 2, macs_ = 0, hidden_ = 0;
};

class DenseNetImpl : public ExpertModule {
 public:
  static constexpr int kLayers = 3;
  explicit DenseNetImpl(const BackboneSpec& s) {
    check_input(s, "densenet");
    const int64_t w = s.width, g = std::max<int64_t>(1, w / 2);
    int64_t h = s.input[1], wd = s.input[2], c = w;
    stem = register_module("stem", conv(s.input[0], w, 3));
    macs_ += conv_macs(s.input[0], w, 3, h, wd);
    for (int b = 0; b < 2; ++b) {
      for (int l = 0; l < kLayers; ++l) {
        bns.push_back(register_module(fmt::format("block{}_{}_bn", b, l), torch::nn::BatchNorm2d(c)));
        convs.push_back(register_module(fmt::format("block{}_{}_conv", b, l), conv(c, g, 3)));
        macs_ += conv_macs(c, g, 3, h, wd);
        c += g;
      }
      if (b == 0) {
        trans_bn = register_module("transition_bn", torch::nn::BatchNorm2d(c));
        trans = register_module("transition_conv", conv(c, c / 2, 1));
        macs_ += conv_macs(c, c / 2, 1, h, wd);
        c /= 2;
        pool.plan(h, wd);
      }
    }
    final_bn = register_module("final_bn", torch::nn::BatchNorm2d(c));
    fc = register_module("fc", torch::nn::Linear(c, s.classes));
    macs_ += c * s.classes;
    hidden_ = c;
  }
  HiddenAndLogits forward_hidden(const at::Tensor& x) override {
    at::Tensor y = stem->forward(x);
    size_t i = 0;
    for (int b = 0; b < 2; ++b) {
      for (int l = 0; l < kLayers; ++l, ++i) y = torch::cat({y, convs[i]->forward(torch::relu(bns[i]->forward(y)))}, 1);
      if (b == 0) {
        y = trans->forward(torch::relu(trans_bn->forward(y)));
        if (pool.on) y = torch::avg_pool2d(y, 2, 2);
      }
    }
    at::Tensor h = torch::adaptive_avg_pool2d(torch::relu(final_bn->forward(y)), {1, 1}).flatten(1);
    return {h, fc->forward(h)};
  }
  at::Tensor forward(const at::Tensor& x) override { return forward_hidden(x).logits; }
  int64_t forward_macs() const override { return macs_; }
  int64_t hidden_dim() const override { return hidden_; }

 private:
  torch::nn::Conv2d stem{nullptr}, trans{nullptr};
  torch::nn::BatchNorm2d trans_bn{nullptr}, final_bn{nullptr};
  std::vector<torch::nn::BatchNorm2d> bns;
  std::vector<torch::nn::Conv2d> convs;
  torch::nn::Linear fc{nullptr};
  Pool pool;
  int64_t macs_ = 0, hidden_ = 0;
};

class BagNetImpl : public ExpertModule {
 public:
  explicit BagNetImpl(const BackboneSpec& s) {
    check_input(s, "bagnet");
    const int64_t w = s.width, h = s.input[1], wd = s.input[2];
    const std::vector<int64_t> widths = {w, 2 * w, 2 * w, 4 * w};
    int64_t c = s.input[0];
    for (size_t i = 0; i < widths.size(); ++i) {
      const int64_t k = i == 0 ? 3 : 1;  // one 3x3 layer: every position sees a 3x3 patch
      layers.push_back(register_module(fmt::format("conv{}", i), conv(c, widths[i], k)));
      macs_ += conv_macs(c, widths[i], k, h, wd);
      c = widths[i];
    }
    head = register_module("head", conv(c, s.classes, 1));
    macs_ += conv_macs(c, s.classes, 1, h, wd);
    hidden_ = c;
  }
  HiddenAndLogits forward_hidden(const at::Tensor& x) override {
    at::Tensor y = x;
    for (auto& l : layers) y = torch::relu(l->forward(y));
    at::Tensor h = y.mean({2, 3});              // pooled local features
    return {h, head->forward(y).mean({2, 3})};  // local class evidence, averaged
  }
  at::Tensor forward(const at::Tensor& x) override { return forward_hidden(x).logits; }
  int64_t forward_macs() const override { return macs_; }
  int64_t hidden_dim() const override { return hidden_; }

 private:
  std::vector<torch::nn::Conv2d> layers;
  torch::nn::Conv2d head{nullptr};
  int64_t macs_ = 0, hidden_ = 0;
};

// LEMUR experiment 1's fully connected expert on a shared trunk's features:
// average pooling to a 4x4 grid (less where the map is smaller), flattened,
// FC(hidden) ReLU, FC(hidden) ReLU, FC(classes).
class MlpImpl : public ExpertModule {
 public:
  explicit MlpImpl(const BackboneSpec& s) {
    check_input(s, "mlp");
    grid_h_ = std::min<int64_t>(4, s.input[1]);
    grid_w_ = std::min<int64_t>(4, s.input[2]);
    const int64_t flat = s.input[0] * grid_h_ * grid_w_;
    fc1 = register_module("fc1", torch::nn::Linear(flat, s.hidden));
    fc2 = register_module("fc2", torch::nn::Linear(s.hidden, s.hidden));
    out = register_module("out", torch::nn::Linear(s.hidden, s.classes));
    macs_ = flat * s.hidden + s.hidden * s.hidden + s.hidden * s.classes;
    hidden_ = s.hidden;
  }
  HiddenAndLogits forward_hidden(const at::Tensor& x) override {
    at::Tensor v = torch::adaptive_avg_pool2d(x, {grid_h_, grid_w_}).flatten(1);
    at::Tensor h = torch::relu(fc2->forward(torch::relu(fc1->forward(v))));
    return {h, out->forward(h)};
  }
  at::Tensor forward(const at::Tensor& x) override { return forward_hidden(x).logits; }
  int64_t forward_macs() const override { return macs_; }
  int64_t hidden_dim() const override { return hidden_; }

 private:
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, out{nullptr};
  int64_t grid_h_ = 4, grid_w_ = 4, macs_ = 0, hidden_ = 0;
};

}  // namespace

Expert make_mlp_expert(const BackboneSpec& spec) { return std::make_shared<MlpImpl>(spec); }
Expert make_alexnet_expert(const BackboneSpec& spec) { return std::make_shared<AlexNetImpl>(spec); }
Expert make_densenet_expert(const BackboneSpec& spec) { return std::make_shared<DenseNetImpl>(spec); }
Expert make_bagnet_expert(const BackboneSpec& spec) { return std::make_shared<BagNetImpl>(spec); }

}  // namespace smoe::models
