// DFCP-MoE's double-stage clustering as an initial-gate strategy
// (cluster/dfcp.h): g0 is the soft assignment to the final clusters' means;
// an outlier row (beyond the threshold of every reference) gets the uniform
// g0 1/K, so that no expert specialises on it and every expert still sees it
// at a low weight. The gate starts from the centroids, as with kmeans.
#include <torch/torch.h>

#include "cluster/dfcp.h"
#include "cluster/dfcp_options.h"
#include "cluster/gate_init.h"
#include "cluster/initial_gate.h"
#include "core/error.h"

namespace smoe::cluster {
namespace {

class DfcpInitialGate : public CentroidInitialGate {
 public:
  InitialGateFit fit(const InitialGateInputs& in) const override {
    SMOE_CHECK(in.comm, "cluster.method dfcp runs collectively");
    DfcpResult r = dfcp_cluster(in.embedding, in.ids, in.kmeans, options::of<DfcpOptions>(in.options), *in.comm);
    InitialGateFit out;
    const int64_t K = in.kmeans.k;
    at::Tensor g0 = soft_assignment(in.embedding, r.centroids, in.temperature, in.hard);
    at::Tensor outlier = (r.assign < 0).unsqueeze(1);
    out.g0 = torch::where(outlier, torch::full_like(g0, 1.0 / static_cast<double>(K)), g0);
    out.assign = r.assign;
    out.saved = {{"centroids", r.centroids}};
    out.record = r.record;
    return out;
  }
};

}  // namespace

std::shared_ptr<const InitialGate> make_dfcp_initial_gate() { return std::make_shared<DfcpInitialGate>(); }

}  // namespace smoe::cluster
