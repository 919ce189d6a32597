// Per-class routing (Royer et al. Table 5): K-means on the C class-mean
// embeddings assigns every class to an expert; g0 is one-hot on a sample's
// class's expert, and at inference the fixed class-routing gate sums the base
// model's class probabilities per expert (no gate is trained).
#include <torch/torch.h>

#include "cluster/gate_init.h"
#include "cluster/initial_gate.h"
#include "core/error.h"

namespace smoe::cluster {
namespace {

class PerClassInitialGate : public InitialGate {
 public:
  InitialGateFit fit(const InitialGateInputs& in) const override {
    PerClassClustering pc = cluster_classes(in.embedding, in.labels, in.num_classes, in.kmeans, in.comm);
    InitialGateFit out;
    out.g0 = class_assignment(in.labels, pc.class_to_expert, in.kmeans.k);
    out.saved = {{"class_to_expert", pc.class_to_expert}, {"centroids", pc.centroids}};
    at::Tensor c = pc.class_to_expert.to(torch::kLong).contiguous();
    out.record = {{"class_to_expert", std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel())}};
    return out;
  }
  std::string gate_kind(const std::string&) const override { return "class_routing"; }
  bool has_oracle() const override { return true; }
  at::Tensor oracle_gate(const at::Tensor& labels, const Tensors& saved, int64_t experts) const override {
    return class_assignment(labels, saved.at("class_to_expert").cpu(), experts);
  }
  void init_gate(models::GateModule& gate, const Tensors& saved, double) const override {
    torch::NoGradGuard no_grad;
    auto buffers = gate.named_buffers();
    at::Tensor* dst = buffers.find("class_to_expert");
    SMOE_ASSERT(dst, "the per-class gate has no class_to_expert buffer");
    dst->copy_(saved.at("class_to_expert"));
  }
};

}  // namespace

std::shared_ptr<const InitialGate> make_per_class_initial_gate() { return std::make_shared<PerClassInitialGate>(); }

}  // namespace smoe::cluster
