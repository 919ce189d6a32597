#include "eval/anytime.h"

#include <torch/torch.h>

#include <algorithm>

#include "core/error.h"

namespace smoe::eval {
namespace {

int64_t correct(const at::Tensor& scores, const at::Tensor& labels) {
  return (scores.argmax(1) == labels).sum().item<int64_t>();
}

// How many samples ran each expert: `active` [n, K] (bool) or expert ids [n].
std::vector<int64_t> runs_of_mask(const at::Tensor& active) {
  at::Tensor per = active.to(torch::kLong).sum(0).contiguous();
  return std::vector<int64_t>(per.data_ptr<int64_t>(), per.data_ptr<int64_t>() + per.numel());
}
std::vector<int64_t> runs_of_ids(const at::Tensor& ids, int64_t experts) {
  at::Tensor per = torch::bincount(ids.to(torch::kLong), {}, experts).contiguous();
  return std::vector<int64_t>(per.data_ptr<int64_t>(), per.data_ptr<int64_t>() + per.numel());
}

at::Tensor chosen(const at::Tensor& probs, const at::Tensor& k) {
  return probs.gather(1, k.view({-1, 1, 1}).expand({-1, 1, probs.size(2)})).squeeze(1);
}

}  // namespace

void RuleCount::add(const RuleCount& o) {
  samples += o.samples;
  correct += o.correct;
  early_exits += o.early_exits;
  if (runs.empty()) runs.assign(o.runs.size(), 0);
  SMOE_ASSERT(runs.size() == o.runs.size(), "rule counts of {} and {} experts", runs.size(), o.runs.size());
  for (size_t k = 0; k < runs.size(); ++k) runs[k] += o.runs[k];
  ensembler_runs += o.ensembler_runs;
}

Point point_of(const RuleCount& r, const Costs& c, double ensembler_macs, bool base_only) {
  Point p;
  const double n = static_cast<double>(std::max<int64_t>(r.samples, 1));
  p.accuracy = static_cast<double>(r.correct) / n;
  p.early_exit_rate = static_cast<double>(r.early_exits) / n;
  if (base_only) {
    p.macs = c.base;
    return p;
  }
  double expert_macs = 0, runs = 0;
  for (size_t k = 0; k < r.runs.size(); ++k) {
    expert_macs += static_cast<double>(r.runs[k]) * c.experts.at(k);
    runs += static_cast<double>(r.runs[k]);
  }
  p.mean_experts = runs / n;
  p.macs = c.base + c.gate + (expert_macs + static_cast<double>(r.ensembler_runs) * ensembler_macs) / n;
  return p;
}

RuleCount count_base(const at::Tensor& base_probs, const at::Tensor& labels, int64_t experts) {
  RuleCount r;
  r.samples = labels.size(0);
  r.correct = correct(base_probs, labels);
  r.early_exits = r.samples;
  r.runs.assign(static_cast<size_t>(experts), 0);
  return r;
}

at::Tensor top1_probs(const at::Tensor& gate, const at::Tensor& probs) { return chosen(probs, gate.argmax(1)); }

at::Tensor top2_probs(const at::Tensor& gate, const at::Tensor& expert_probs) {
  if (gate.size(1) < 2) return top1_probs(gate, expert_probs);
  auto [g, k] = gate.topk(2, 1);
  return g.select(1, 0).unsqueeze(1) * chosen(expert_probs, k.select(1, 0)) +
         g.select(1, 1).unsqueeze(1) * chosen(expert_probs, k.select(1, 1));
}

namespace {
// The experts the anytime model runs at tau: alpha_k = g_k (1 - max_y phi(y|x)) >= tau.
at::Tensor anytime_active(const at::Tensor& base_probs, const at::Tensor& gate, double tau) {
  SMOE_CHECK(tau >= 0 && tau <= 1, "tau must be in [0, 1], got {}", tau);
  at::Tensor confidence = std::get<0>(base_probs.max(1));     // max_y phi(y|x)  [N]
  at::Tensor alpha = gate * (1.0 - confidence).unsqueeze(1);  // [N, K]
  return alpha >= tau;                                        // [N, K]
}
}  // namespace

at::Tensor anytime_probs(const at::Tensor& base_probs, const at::Tensor& gate, const at::Tensor& ens_probs,
                         double tau) {
  at::Tensor active = anytime_active(base_probs, gate, tau);
  at::Tensor early = active.logical_not().all(1);                                       // [N]
  at::Tensor mix = ((gate * active.to(gate.dtype())).unsqueeze(2) * ens_probs).sum(1);  // [N, C]
  return torch::where(early.unsqueeze(1), base_probs, mix);
}

RuleCount count_top1(const at::Tensor& gate, const at::Tensor& probs, const at::Tensor& labels, bool ensembled) {
  at::Tensor k = gate.argmax(1);
  RuleCount r;
  r.samples = labels.size(0);
  r.correct = correct(chosen(probs, k), labels);
  r.runs = runs_of_ids(k, gate.size(1));
  r.ensembler_runs = ensembled ? r.samples : 0;
  return r;
}

RuleCount count_top2(const at::Tensor& gate, const at::Tensor& expert_probs, const at::Tensor& labels) {
  if (gate.size(1) < 2) return count_top1(gate, expert_probs, labels, false);
  at::Tensor k = std::get<1>(gate.topk(2, 1));
  RuleCount r;
  r.samples = labels.size(0);
  r.correct = correct(top2_probs(gate, expert_probs), labels);
  r.runs = runs_of_ids(torch::cat({k.select(1, 0), k.select(1, 1)}), gate.size(1));
  return r;
}

RuleCount count_anytime(const at::Tensor& base_probs, const at::Tensor& gate, const at::Tensor& ens_probs,
                        const at::Tensor& labels, double tau) {
  at::Tensor active = anytime_active(base_probs, gate, tau);
  at::Tensor early = active.logical_not().all(1);
  RuleCount r;
  r.samples = labels.size(0);
  r.correct = correct(anytime_probs(base_probs, gate, ens_probs, tau), labels);
  r.early_exits = early.sum().item<int64_t>();
  r.runs = runs_of_mask(active);
  for (int64_t n : r.runs) r.ensembler_runs += n;
  return r;
}

Point base_point(const at::Tensor& base_probs, const at::Tensor& labels, const Costs& c) {
  return point_of(count_base(base_probs, labels, static_cast<int64_t>(c.experts.size())), c, 0.0, true);
}

Point top1_point(const at::Tensor& gate, const at::Tensor& probs, const at::Tensor& labels, const Costs& c,
                 double ensembler_macs) {
  return point_of(count_top1(gate, probs, labels, true), c, ensembler_macs);
}

Point top2_point(const at::Tensor& gate, const at::Tensor& expert_probs, const at::Tensor& labels, const Costs& c) {
  return point_of(count_top2(gate, expert_probs, labels), c, 0.0);
}

Point anytime_point(const at::Tensor& base_probs, const at::Tensor& gate, const at::Tensor& ens_probs,
                    const at::Tensor& labels, double tau, const Costs& c) {
  Point p = point_of(count_anytime(base_probs, gate, ens_probs, labels, tau), c, c.ensembler);
  p.tau = tau;
  return p;
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
