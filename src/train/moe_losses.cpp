#include "train/moe_losses.h"

#include <torch/torch.h>

namespace smoe::train {
namespace {

// The coefficients of tr(M) and of sum(M) in L_s.
struct SimilarityCoefficients {
  double trace, sum;
};
SimilarityCoefficients coefficients(int64_t K, double beta_s, double beta_d) {
  const double k = static_cast<double>(K);
  const double b = K > 1 ? beta_d / (k * k - k) : 0.0;
  return {beta_s / k + b, -b};
}

}  // namespace

at::Tensor pairwise_sq_distances(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor an = a.pow(2).sum(1, true), bn = b.pow(2).sum(1, true).t();
  return (an + bn - 2 * a.mm(b.t())).clamp_min(0);
}

at::Tensor importance_loss(const at::Tensor& probs, double w) {
  if (probs.size(1) < 2) return torch::zeros({}, probs.options());
  at::Tensor importance = probs.sum(0);
  return w * (importance.std() / importance.mean()).pow(2);
}

at::Tensor similarity_loss(const at::Tensor& probs, const at::Tensor& dist, double beta_s, double beta_d) {
  const int64_t B = probs.size(0), K = probs.size(1);
  at::Tensor m = probs.t().mm(dist).mm(probs) / static_cast<double>(B * B);  // [K, K]
  at::Tensor tr = m.trace();
  at::Tensor loss = beta_s * tr / static_cast<double>(K);
  if (K > 1) loss = loss - beta_d * (m.sum() - tr) / static_cast<double>(K * K - K);
  return loss;
}

at::Tensor load_balance_loss(const at::Tensor& probs, double lambda) {
  at::Tensor u = probs.sum(0);
  return lambda * (u - u.mean()).pow(2).mean();
}

at::Tensor usage_grad(const at::Tensor& all_probs, double w, double lambda, double* importance, double* balance) {
  torch::AutoGradMode enable(true);
  at::Tensor usage = all_probs.detach().to(torch::kDouble).sum(0).requires_grad_(true);  // I [K]
  *importance = *balance = 0;
  if (usage.size(0) < 2 || (w == 0 && lambda == 0)) return torch::zeros_like(usage).detach();
  at::Tensor imp = w * (usage.std() / usage.mean()).pow(2);
  at::Tensor bal = lambda * (usage - usage.mean()).pow(2).mean();
  (imp + bal).backward();
  *importance = imp.item<double>();
  *balance = bal.item<double>();
  return usage.grad().detach();  // dI/dP_i = identity
}

at::Tensor similarity_grad_rows(const at::Tensor& dist_rows, const at::Tensor& all_probs, const at::Tensor& row_probs,
                                double beta_s, double beta_d, double* partial) {
  const int64_t B = all_probs.size(0), K = all_probs.size(1);
  const auto c = coefficients(K, beta_s, beta_d);
  const double scale = 1.0 / static_cast<double>(B * B);
  at::Tensor d = dist_rows.to(torch::kDouble), p_all = all_probs.detach().to(torch::kDouble);
  at::Tensor p_rows = row_probs.detach().to(torch::kDouble);
  at::Tensor dp = d.mm(p_all);          // [r, K]: (D P)_i
  at::Tensor dp_sum = dp.sum(1, true);  // [r, 1]: (D P 1)_i
  // tr(M) B^2 = sum_i P_i . (D P)_i and sum(M) B^2 = sum_i (P_i . 1)(D P 1)_i; D is symmetric,
  // so d tr(M) / dP_i = 2 (D P)_i / B^2 and d sum(M) / dP_i = 2 (D P 1)_i 1 / B^2.
  *partial = scale * (c.trace * (p_rows * dp).sum().item<double>() +
                      c.sum * (p_rows.sum(1, true) * dp_sum).sum().item<double>());
  return 2 * scale * (c.trace * dp + c.sum * dp_sum.expand({-1, K}));
}

at::Tensor diversity_loss(const at::Tensor& sums, const at::Tensor& counts, double lambda) {
  const int64_t K = sums.size(0);
  if (K < 2) return torch::zeros({}, sums.options());
  at::Tensor m = sums / counts.clamp_min(1).unsqueeze(1);  // [K, C] mean outputs
  at::Tensor unit = m / m.norm(2, 1, true).clamp_min(1e-12);
  at::Tensor cos = unit.mm(unit.t());  // [K, K]
  // mean over the K(K-1)/2 pairs e < f: the off-diagonal sum halves.
  return lambda * (cos.sum() - cos.trace()) / static_cast<double>(K * (K - 1));
}

at::Tensor diversity_grad(const at::Tensor& sums, const at::Tensor& counts, double lambda, double* value) {
  torch::AutoGradMode enable(true);
  at::Tensor leaf = sums.detach().to(torch::kDouble).requires_grad_(true);
  at::Tensor loss = diversity_loss(leaf, counts.to(torch::kDouble), lambda);
  *value = loss.item<double>();
  if (!loss.requires_grad()) return torch::zeros_like(leaf).detach();
  loss.backward();
  return leaf.grad().detach();
}

}  // namespace smoe::train
