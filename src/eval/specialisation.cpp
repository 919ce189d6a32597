#include "eval/specialisation.h"

#include <torch/torch.h>

namespace smoe::eval {

double entropy_bits(const at::Tensor& p) {
  at::Tensor q = p.to(torch::kDouble).flatten();
  at::Tensor nz = q.masked_select(q > 0);
  return -(nz * nz.log2()).sum().item<double>();
}

at::Tensor routing_table(const at::Tensor& expert, const at::Tensor& labels, int64_t experts, int64_t num_classes) {
  at::Tensor flat = expert.to(torch::kLong) * num_classes + labels.to(torch::kLong);
  return torch::bincount(flat, {}, experts * num_classes).view({experts, num_classes});
}

namespace {

std::vector<int64_t> fixed_point(const at::Tensor& v) {
  at::Tensor f = (v.to(torch::kDouble) * SpecialisationCount::kScale).round().to(torch::kLong).contiguous();
  return std::vector<int64_t>(f.data_ptr<int64_t>(), f.data_ptr<int64_t>() + f.numel());
}

void add_into(std::vector<int64_t>& into, const std::vector<int64_t>& from) {
  if (into.empty()) into.assign(from.size(), 0);
  for (size_t i = 0; i < into.size(); ++i) into[i] += from[i];
}

}  // namespace

void SpecialisationCount::add(const SpecialisationCount& o) {
  samples += o.samples;
  entropy += o.entropy;
  add_into(usage, o.usage);
  add_into(routing, o.routing);
}

SpecialisationCount count_specialisation(const at::Tensor& gate, const at::Tensor& labels, int64_t num_classes) {
  torch::NoGradGuard no_grad;
  at::Tensor g = gate.to(torch::kDouble);
  SpecialisationCount c;
  c.samples = g.size(0);
  // Per-sample entropies rounded to fixed point one by one, then summed as
  // integers: the total does not depend on how samples were split.
  at::Tensor h = -torch::where(g > 0, g * g.log2(), torch::zeros_like(g)).sum(1);
  for (int64_t v : fixed_point(h)) c.entropy += v;
  at::Tensor usage = torch::zeros({g.size(1)}, torch::kLong);
  if (g.size(0) > 0) usage = (g * SpecialisationCount::kScale).round().to(torch::kLong).sum(0);
  usage = usage.contiguous();
  c.usage.assign(usage.data_ptr<int64_t>(), usage.data_ptr<int64_t>() + usage.numel());
  at::Tensor table = routing_table(g.argmax(1), labels, g.size(1), num_classes).contiguous();
  c.routing.assign(table.data_ptr<int64_t>(), table.data_ptr<int64_t>() + table.numel());
  return c;
}

Specialisation specialisation_of(const SpecialisationCount& c, int64_t num_classes) {
  Specialisation s;
  const double n = static_cast<double>(std::max<int64_t>(c.samples, 1));
  s.gate_entropy = static_cast<double>(c.entropy) / SpecialisationCount::kScale / n;
  at::Tensor usage = torch::tensor(c.usage, torch::kLong).to(torch::kDouble) / SpecialisationCount::kScale / n;
  s.usage_entropy = entropy_bits(usage / usage.sum().clamp_min(1e-300));
  const int64_t K = static_cast<int64_t>(c.usage.size());
  at::Tensor joint = torch::tensor(c.routing, torch::kLong).view({K, num_classes}).to(torch::kDouble);
  joint /= joint.sum().clamp_min(1);
  s.mutual_information = entropy_bits(joint.sum(1)) + entropy_bits(joint.sum(0)) - entropy_bits(joint);
  return s;
}

Specialisation specialisation(const at::Tensor& gate, const at::Tensor& labels, int64_t num_classes) {
  return specialisation_of(count_specialisation(gate, labels, num_classes), num_classes);
}

}  // namespace smoe::eval
