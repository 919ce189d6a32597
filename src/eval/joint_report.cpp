#include "eval/joint_report.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "eval/report.h"

namespace smoe::eval {

JointTally::JointTally(int64_t experts, int64_t num_classes)
    : experts_(experts),
      classes_(num_classes),
      alone_(static_cast<size_t>(experts), 0),
      top2_runs_(static_cast<size_t>(experts), 0),
      mixture_runs_(static_cast<size_t>(experts), 0) {
  spec_.usage.assign(static_cast<size_t>(experts), 0);
  spec_.routing.assign(static_cast<size_t>(experts * num_classes), 0);
  mixture_classes_ = top1_classes_ = ClassCount::zeros(num_classes);
}

void JointTally::add(const at::Tensor& labels, const at::Tensor& gate, const at::Tensor& expert_logits,
                     const at::Tensor& mixture) {
  torch::NoGradGuard no_grad;
  const int64_t n = labels.size(0), K = experts_;
  samples_ += n;
  mixture_ += (mixture.argmax(1) == labels).sum().item<int64_t>();
  at::Tensor predicted = expert_logits.argmax(2);  // [n, K]
  at::Tensor right = predicted == labels.unsqueeze(1);
  for (int64_t k = 0; k < K; ++k) alone_[static_cast<size_t>(k)] += right.select(1, k).sum().item<int64_t>();
  at::Tensor first = gate.argmax(1);
  top1_ += right.gather(1, first.unsqueeze(1)).sum().item<int64_t>();
  const int64_t k2 = std::min<int64_t>(2, K);
  at::Tensor top = std::get<1>(gate.topk(k2, 1));  // [n, k2]
  at::Tensor g2 = gate.gather(1, top);
  g2 = g2 / g2.sum(1, true);
  at::Tensor probs = torch::softmax(expert_logits, 2);
  at::Tensor picked = probs.gather(1, top.unsqueeze(2).expand({n, k2, probs.size(2)}));  // [n, k2, C]
  top2_ += ((g2.unsqueeze(2) * picked).sum(1).argmax(1) == labels).sum().item<int64_t>();
  at::Tensor runs = torch::zeros({K}, torch::kLong)
                        .index_add_(0, top.flatten().cpu(), (gate.gather(1, top) > 0).flatten().cpu().to(torch::kLong));
  at::Tensor nonzero = (gate > 0).sum(0).cpu();
  for (int64_t k = 0; k < K; ++k) {
    top2_runs_[static_cast<size_t>(k)] += runs[k].item<int64_t>();
    mixture_runs_[static_cast<size_t>(k)] += nonzero[k].item<int64_t>();
  }
  spec_.add(count_specialisation(gate.cpu(), labels.cpu(), classes_));
  mixture_classes_.add(count_classes(mixture.cpu(), labels.cpu(), mixture_classes_.bins));
  at::Tensor top1_probs = probs.gather(1, first.view({-1, 1, 1}).expand({n, 1, probs.size(2)})).squeeze(1);
  top1_classes_.add(count_classes(top1_probs.cpu(), labels.cpu(), top1_classes_.bins));
}

void JointTally::each_field(const std::function<void(int64_t&)>& f) {
  for (int64_t* v : {&samples_, &mixture_, &top1_, &top2_}) f(*v);
  for (auto& v : alone_) f(v);
  for (auto& v : top2_runs_) f(v);
  for (auto& v : mixture_runs_) f(v);
  f(spec_.samples);
  f(spec_.entropy);
  for (auto& v : spec_.usage) f(v);
  for (auto& v : spec_.routing) f(v);
  mixture_classes_.each(f);
  top1_classes_.each(f);
}

nlohmann::json JointTally::report(const JointCosts& costs) const {
  SMOE_ASSERT(static_cast<int64_t>(costs.experts.size()) == experts_, "joint report: {} expert costs for {} experts",
              costs.experts.size(), experts_);
  const double n = std::max<double>(1.0, static_cast<double>(samples_));
  double all = 0;
  for (double m : costs.experts) all += m;
  // Expected MACs of routing: each sample runs the experts it is routed to,
  // unless the gate itself needs every expert.
  double top1_macs = costs.gate, top2_macs = costs.gate, mixture_macs = costs.gate;
  for (int64_t k = 0; k < experts_; ++k) {
    int64_t routed = 0;
    for (int64_t c = 0; c < classes_; ++c) routed += spec_.routing[static_cast<size_t>(k * classes_ + c)];
    top1_macs += costs.experts[static_cast<size_t>(k)] * static_cast<double>(routed) / n;
    top2_macs += costs.experts[static_cast<size_t>(k)] * static_cast<double>(top2_runs_[static_cast<size_t>(k)]) / n;
    mixture_macs +=
        costs.experts[static_cast<size_t>(k)] * static_cast<double>(mixture_runs_[static_cast<size_t>(k)]) / n;
  }
  if (costs.gate_runs_every_expert) top1_macs = top2_macs = mixture_macs = costs.gate + all;
  auto rule = [&](int64_t correct, double macs) {
    return nlohmann::json{{"accuracy", static_cast<double>(correct) / n}, {"correct", correct}, {"macs", macs}};
  };
  nlohmann::json r;
  r["mixture"] = rule(mixture_, mixture_macs);
  r["top1"] = rule(top1_, top1_macs);
  for (auto [key, count] :
       {std::pair<const char*, const ClassCount*>{"mixture", &mixture_classes_}, {"top1", &top1_classes_}}) {
    const ClassMetrics m = class_metrics(*count);
    r[key]["map"] = std::isfinite(m.map) ? nlohmann::json(m.map) : nlohmann::json(nullptr);
    r[key]["balanced_accuracy"] =
        std::isfinite(m.balanced_accuracy) ? nlohmann::json(m.balanced_accuracy) : nlohmann::json(nullptr);
  }
  r["top2"] = rule(top2_, top2_macs);
  std::vector<double> alone;
  for (int64_t v : alone_) alone.push_back(static_cast<double>(v) / n);
  r["experts_alone"] = alone;
  r.update(specialisation_json(spec_, experts_, classes_));
  return r;
}

}  // namespace smoe::eval
