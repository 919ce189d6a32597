#include "cluster/gate_init.h"

#include <torch/torch.h>

#include "core/error.h"

namespace smoe::cluster {

at::Tensor soft_assignment(const at::Tensor& embeddings, const at::Tensor& centroids, double temperature, bool hard) {
  SMOE_CHECK(temperature > 0, "gate temperature must be positive, got {}", temperature);
  torch::NoGradGuard no_grad;
  at::Tensor d = squared_distances(embeddings.to(torch::kFloat), centroids.to(torch::kFloat));
  if (hard) return torch::one_hot(d.argmin(1), centroids.size(0)).to(torch::kFloat);
  return torch::softmax(-d / temperature, 1);
}

PerClassClustering cluster_classes(const at::Tensor& embeddings, const at::Tensor& labels, int64_t num_classes,
                                   const KMeansOptions& options) {
  SMOE_CHECK(options.k <= num_classes, "per-class clustering: {} experts for {} classes (need experts <= classes)",
             options.k, num_classes);
  torch::NoGradGuard no_grad;
  at::Tensor sums = torch::zeros({num_classes, embeddings.size(1)}, embeddings.options().dtype(torch::kDouble));
  sums.index_add_(0, labels, embeddings.to(torch::kDouble));
  at::Tensor counts = torch::bincount(labels, {}, num_classes).to(torch::kDouble);
  SMOE_CHECK((counts > 0).all().item<bool>(), "per-class clustering: some class has no training sample");
  at::Tensor means = (sums / counts.unsqueeze(1)).to(torch::kFloat);
  KMeansResult r = kmeans(means, options);
  return {r.assign, r.centroids};
}

at::Tensor class_assignment(const at::Tensor& labels, const at::Tensor& class_to_expert, int64_t experts) {
  return torch::one_hot(class_to_expert.index_select(0, labels), experts).to(torch::kFloat);
}

}  // namespace smoe::cluster
