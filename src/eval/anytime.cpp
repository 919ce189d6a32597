#include "eval/anytime.h"

#include <torch/torch.h>

#include <algorithm>

#include "core/error.h"

namespace smoe::eval {
namespace {

double accuracy(const at::Tensor& scores, const at::Tensor& labels) {
  return (scores.argmax(1) == labels).to(torch::kDouble).mean().item<double>();
}

at::Tensor expert_costs(const Costs& c, const at::TensorOptions& o) {
  return torch::tensor(c.experts, torch::kDouble).to(o.device());
}

}  // namespace

Point base_point(const at::Tensor& base_probs, const at::Tensor& labels, const Costs& c) {
  Point p;
  p.accuracy = accuracy(base_probs, labels);
  p.macs = c.base;
  p.early_exit_rate = 1.0;
  return p;
}

Point top1_point(const at::Tensor& gate, const at::Tensor& probs, const at::Tensor& labels, const Costs& c,
                 double ensembler_macs) {
  at::Tensor k = gate.argmax(1);
  at::Tensor chosen = probs.gather(1, k.view({-1, 1, 1}).expand({-1, 1, probs.size(2)})).squeeze(1);
  Point p;
  p.accuracy = accuracy(chosen, labels);
  p.macs = c.base + c.gate + ensembler_macs + expert_costs(c, gate.options()).index_select(0, k).mean().item<double>();
  p.mean_experts = 1.0;
  return p;
}

Point top2_point(const at::Tensor& gate, const at::Tensor& expert_probs, const at::Tensor& labels, const Costs& c) {
  const int64_t K = gate.size(1);
  if (K < 2) return top1_point(gate, expert_probs, labels, c, 0.0);
  auto [g, k] = gate.topk(2, 1);
  at::Tensor p0 =
      expert_probs.gather(1, k.select(1, 0).view({-1, 1, 1}).expand({-1, 1, expert_probs.size(2)})).squeeze(1);
  at::Tensor p1 =
      expert_probs.gather(1, k.select(1, 1).view({-1, 1, 1}).expand({-1, 1, expert_probs.size(2)})).squeeze(1);
  at::Tensor mix = (g.select(1, 0).unsqueeze(1) * p0 + g.select(1, 1).unsqueeze(1) * p1);
  Point p;
  p.accuracy = accuracy(mix, labels);
  at::Tensor costs = expert_costs(c, gate.options());
  p.macs = c.base + c.gate +
           (costs.index_select(0, k.select(1, 0)) + costs.index_select(0, k.select(1, 1))).mean().item<double>();
  p.mean_experts = 2.0;
  return p;
}

Point anytime_point(const at::Tensor& base_probs, const at::Tensor& gate, const at::Tensor& ens_probs,
                    const at::Tensor& labels, double tau, const Costs& c) {
  SMOE_CHECK(tau >= 0 && tau <= 1, "tau must be in [0, 1], got {}", tau);
  at::Tensor confidence = std::get<0>(base_probs.max(1));                               // max_y phi(y|x)  [N]
  at::Tensor alpha = gate * (1.0 - confidence).unsqueeze(1);                            // [N, K]
  at::Tensor active = alpha >= tau;                                                     // [N, K]
  at::Tensor early = active.logical_not().all(1);                                       // [N]
  at::Tensor mix = ((gate * active.to(gate.dtype())).unsqueeze(2) * ens_probs).sum(1);  // [N, C]
  at::Tensor p = torch::where(early.unsqueeze(1), base_probs, mix);
  at::Tensor activef = active.to(torch::kDouble);
  Point pt;
  pt.tau = tau;
  pt.accuracy = accuracy(p, labels);
  pt.early_exit_rate = early.to(torch::kDouble).mean().item<double>();
  pt.mean_experts = activef.sum(1).mean().item<double>();
  at::Tensor per_sample = activef.mv(expert_costs(c, gate.options()).to(torch::kDouble)) + activef.sum(1) * c.ensembler;
  pt.macs = c.base + c.gate + per_sample.mean().item<double>();
  return pt;
}

std::vector<size_t> convex_envelope(const std::vector<Point>& points) {
  std::vector<size_t> idx(points.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return points[a].macs < points[b].macs ||
           (points[a].macs == points[b].macs && points[a].accuracy > points[b].accuracy);
  });
  // Upper hull by the monotone chain, then keep it only while accuracy rises.
  std::vector<size_t> hull;
  auto cross = [&](size_t o, size_t a, size_t b) {
    return (points[a].macs - points[o].macs) * (points[b].accuracy - points[o].accuracy) -
           (points[a].accuracy - points[o].accuracy) * (points[b].macs - points[o].macs);
  };
  for (size_t i : idx) {
    if (!hull.empty() && points[hull.back()].macs == points[i].macs) continue;
    while (hull.size() >= 2 && cross(hull[hull.size() - 2], hull.back(), i) >= 0) hull.pop_back();
    hull.push_back(i);
  }
  size_t best = 0;
  for (size_t j = 0; j < hull.size(); ++j)
    if (points[hull[j]].accuracy > points[hull[best]].accuracy) best = j;
  hull.resize(best + 1);
  return hull;
}

}  // namespace smoe::eval
