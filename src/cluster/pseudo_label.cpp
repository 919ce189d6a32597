#include "cluster/pseudo_label.h"

#include <torch/torch.h>

#include <random>
#include <vector>

#include "core/error.h"

namespace smoe::cluster {

struct PseudoLabeler::Impl : torch::nn::Module {
  Impl(int64_t in, int64_t dim)
      : fc1(register_module("fc1", torch::nn::Linear(in, 2 * dim))),
        fc2(register_module("fc2", torch::nn::Linear(2 * dim, dim))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1, fc2;
};

PseudoLabeler::PseudoLabeler(int64_t input_dim, const PseudoLabelOptions& o) : options_(o) {
  torch::manual_seed(o.seed);  // the initialisation (callers that need another stream reseed after)
  impl_ = std::make_unique<Impl>(input_dim, o.dim);
}

PseudoLabeler::~PseudoLabeler() = default;

torch::nn::Module& PseudoLabeler::module() { return *impl_; }

void PseudoLabeler::fit(const at::Tensor& x_in, const at::Tensor& y_in) {
  torch::AutoGradMode with_grad(true);
  at::Tensor x = x_in.to(torch::kFloat), y = y_in.to(torch::kLong).contiguous();
  const int64_t n = x.size(0);
  SMOE_CHECK(n >= 2, "pseudo-labels: {} trusted samples, need at least 2", n);
  const int64_t* py = y.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(y.max().item<int64_t>() + 1));
  for (int64_t i = 0; i < n; ++i) by_class[static_cast<size_t>(py[i])].push_back(i);
  torch::optim::Adam opt(impl_->parameters(), torch::optim::AdamOptions(options_.lr));
  std::mt19937_64 rng(options_.seed ^ 0x70616972ULL);
  std::uniform_int_distribution<int64_t> any(0, n - 1);
  for (int64_t step = 0; step < options_.steps; ++step) {
    std::vector<int64_t> a, b;
    std::vector<float> same;
    for (int64_t p = 0; p < options_.batch_size; ++p) {
      const int64_t i = any(rng);
      const auto& mates = by_class[static_cast<size_t>(py[i])];
      int64_t j = any(rng);
      if (p % 2 == 0 && mates.size() > 1) j = mates[std::uniform_int_distribution<size_t>(0, mates.size() - 1)(rng)];
      a.push_back(i);
      b.push_back(j);
      same.push_back(py[i] == py[j] ? 1.0f : 0.0f);
    }
    at::Tensor za = impl_->forward(x.index_select(0, torch::tensor(a)));
    at::Tensor zb = impl_->forward(x.index_select(0, torch::tensor(b)));
    at::Tensor d = (za - zb).pow(2).sum(1).clamp_min(1e-12).sqrt();
    at::Tensor s = torch::tensor(same);
    at::Tensor loss = (s * d.pow(2) + (1 - s) * (options_.margin - d).clamp_min(0).pow(2)).mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
}

at::Tensor PseudoLabeler::project(const at::Tensor& x) const {
  torch::NoGradGuard no_grad;
  return impl_->forward(x.to(torch::kFloat));
}

std::pair<at::Tensor, at::Tensor> PseudoLabeler::nearest(const at::Tensor& x, const at::Tensor& trusted_x,
                                                         const at::Tensor& trusted_y) const {
  if (x.size(0) == 0) return {torch::zeros({0}), torch::zeros({0}, torch::kLong)};
  auto [d, i] = torch::cdist(project(x), project(trusted_x)).min(1);
  return {torch::exp(-d / options_.margin), trusted_y.to(torch::kLong).index_select(0, i)};
}

TauChoice PseudoLabeler::choose_tau(const at::Tensor& ref_x, const at::Tensor& ref_y, const at::Tensor& val_x,
                                    const at::Tensor& val_y) const {
  auto [sim, label] = nearest(val_x, ref_x, ref_y);
  at::Tensor right = label == val_y.to(torch::kLong);
  TauChoice best;
  best.f1 = -1;
  for (int k = 0; k <= 100; ++k) {
    const double t = k / 100.0;
    at::Tensor labelled = sim >= t;
    const double tp = (labelled & right).sum().item<double>(), n_lab = labelled.sum().item<double>();
    const double precision = n_lab > 0 ? tp / n_lab : 0,
                 recall = tp / static_cast<double>(std::max<int64_t>(val_x.size(0), 1));
    const double f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;
    if (f1 > best.f1) best = {t, f1, precision, recall};
  }
  return best;
}

at::Tensor PseudoLabeler::label(const at::Tensor& x, const at::Tensor& trusted_x, const at::Tensor& trusted_y,
                                double tau) const {
  auto [sim, label] = nearest(x, trusted_x, trusted_y);
  return torch::where(sim >= tau, label, torch::full_like(label, -1));
}

}  // namespace smoe::cluster
