// Per-sample K-means (Royer et al. Algorithm 1 step 2): K-means++ with
// restarts on the embeddings (distributed over the ranks' rows when run
// collectively, cluster/distributed_kmeans.h); g0(k|x) = softmax_k(-|x - c_k|^2 / T), or one-hot
// on the nearest centroid. The gate starts from the closed form of g0.
#include <torch/torch.h>

#include "cluster/distributed_kmeans.h"
#include "cluster/gate_init.h"
#include "cluster/initial_gate.h"
#include "comm/tensor_collectives.h"
#include "core/log.h"

namespace smoe::cluster {
namespace {

class KMeansInitialGate : public CentroidInitialGate {
 public:
  InitialGateFit fit(const InitialGateInputs& in) const override {
    KMeansResult km;
    at::Tensor sizes;
    if (in.comm) {
      DistributedKMeansOptions o;
      o.kmeans = in.kmeans;
      km = kmeans(in.embedding, in.ids, o, *in.comm);
      sizes = torch::bincount(km.assign.cpu(), {}, in.kmeans.k).to(torch::kLong).contiguous();
      comm::allreduce(*in.comm, sizes, comm::ReduceOp::sum);
    } else {
      km = kmeans(in.embedding, in.kmeans);
      sizes = torch::bincount(km.assign, {}, in.kmeans.k).to(torch::kLong).contiguous();
    }
    InitialGateFit out;
    out.g0 = soft_assignment(in.embedding, km.centroids, in.temperature, in.hard);
    out.assign = km.assign;
    out.saved = {{"centroids", km.centroids}};
    std::vector<int64_t> s(sizes.data_ptr<int64_t>(), sizes.data_ptr<int64_t>() + sizes.numel());
    out.record = {{"inertia", km.inertia}, {"best_restart", km.best_restart}, {"cluster_sizes", s}};
    log::info("cluster   k-means: inertia {:.4g} (restart {}), cluster sizes [{}]", km.inertia, km.best_restart,
              fmt::join(s, ", "));
    return out;
  }
};

}  // namespace

std::shared_ptr<const InitialGate> make_kmeans_initial_gate() { return std::make_shared<KMeansInitialGate>(); }

}  // namespace smoe::cluster
