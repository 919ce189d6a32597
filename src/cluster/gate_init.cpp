#include "cluster/gate_init.h"

#include <torch/torch.h>

#include <algorithm>
#include <tuple>

#include "cluster/distributed_kmeans.h"
#include "core/error.h"

namespace smoe::cluster {

at::Tensor rowwise_squared_distances(const at::Tensor& embeddings, const at::Tensor& centroids) {
  torch::NoGradGuard no_grad;
  at::Tensor x = embeddings.to(torch::kFloat), c = centroids.to(torch::kFloat).unsqueeze(0);
  const int64_t n = x.size(0), block = 1024;
  at::Tensor d = torch::empty({n, centroids.size(0)}, x.options());
  for (int64_t start = 0; start < n; start += block) {
    const int64_t len = std::min(block, n - start);
    d.narrow(0, start, len).copy_((x.narrow(0, start, len).unsqueeze(1) - c).pow(2).sum(2));
  }
  return d;
}

at::Tensor soft_assignment(const at::Tensor& embeddings, const at::Tensor& centroids, double temperature, bool hard) {
  SMOE_CHECK(temperature > 0, "gate temperature must be positive, got {}", temperature);
  // Row by row: the initial gate does not depend on how rows are split among ranks.
  at::Tensor d = rowwise_squared_distances(embeddings, centroids);
  if (hard) return torch::one_hot(d.argmin(1), centroids.size(0)).to(torch::kFloat);
  return torch::softmax(-d / temperature, 1);
}

PerClassClustering cluster_classes(const at::Tensor& embeddings, const at::Tensor& labels, int64_t num_classes,
                                   const KMeansOptions& options, comm::Communicator* comm) {
  SMOE_CHECK(options.k <= num_classes, "per-class clustering: {} experts for {} classes (need experts <= classes)",
             options.k, num_classes);
  torch::NoGradGuard no_grad;
  at::Tensor sums, counts;
  if (comm) {
    std::tie(sums, counts) = group_sums(embeddings, labels, num_classes, *comm);
    counts = counts.to(torch::kDouble);
  } else {
    sums = torch::zeros({num_classes, embeddings.size(1)}, embeddings.options().dtype(torch::kDouble));
    sums.index_add_(0, labels, embeddings.to(torch::kDouble));
    counts = torch::bincount(labels, {}, num_classes).to(torch::kDouble);
  }
  SMOE_CHECK((counts > 0).all().item<bool>(), "per-class clustering: some class has no training sample");
  at::Tensor means = (sums / counts.unsqueeze(1)).to(torch::kFloat);
  KMeansResult r = kmeans(means, options);
  return {r.assign, r.centroids};
}

at::Tensor class_assignment(const at::Tensor& labels, const at::Tensor& class_to_expert, int64_t experts) {
  return torch::one_hot(class_to_expert.index_select(0, labels), experts).to(torch::kFloat);
}

}  // namespace smoe::cluster
