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

Specialisation specialisation(const at::Tensor& gate, const at::Tensor& labels, int64_t num_classes) {
  torch::NoGradGuard no_grad;
  at::Tensor g = gate.to(torch::kDouble);
  Specialisation s;
  at::Tensor plogp = torch::where(g > 0, g * g.log2(), torch::zeros_like(g));
  s.gate_entropy = -plogp.sum(1).mean().item<double>();
  s.usage_entropy = entropy_bits(g.mean(0));
  at::Tensor joint = routing_table(g.argmax(1), labels, g.size(1), num_classes).to(torch::kDouble);
  joint /= joint.sum();
  s.mutual_information = entropy_bits(joint.sum(1)) + entropy_bits(joint.sum(0)) - entropy_bits(joint);
  return s;
}

}  // namespace smoe::eval
