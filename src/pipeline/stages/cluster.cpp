// Stage "cluster" (Algorithm 1 step 2): on the coordinator, the initial-gate
// strategy of cluster.method turns the embeddings into the frozen initial
// gate g0 [N, K] (cluster.pt), which goes to every rank.
#include <torch/torch.h>

#include "cluster/initial_gate.h"
#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/rng.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "train/checkpoint.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class ClusterStage : public Stage {
 public:
  std::string name() const override { return "cluster"; }
  std::vector<std::string> keys() const override {
    return {"cluster.", "experts.count", "gate.temperature", "gate.hard"};
  }
  void check_inputs(const Config& c, const data::Manifest& m) const override {
    const int64_t count = m.split(c.data.train_split).count;
    const int64_t n = c.data.limit_train > 0 ? std::min(c.data.limit_train, count) : count;
    SMOE_CHECK(n >= c.experts.count,
               "config key 'experts.count' is {} but the training split '{}' has {} samples: every expert needs at "
               "least one",
               c.experts.count, c.data.train_split, n);
  }
  json run(RunState& s) override {
    json record;
    if (s.comm.is_root()) {
      cluster::InitialGateInputs in;
      in.embedding = s.root_train_gate_features().embedding;
      in.labels = s.train_labels();
      in.num_classes = s.train->num_classes();
      in.kmeans.k = s.cfg.experts.count;
      in.kmeans.restarts = s.cfg.cluster.restarts;
      in.kmeans.max_iter = s.cfg.cluster.max_iter;
      in.kmeans.tol = s.cfg.cluster.tol;
      in.kmeans.seed = derive_seed(s.cfg.seed, "cluster");
      in.temperature = s.cfg.gate.temperature;
      in.hard = s.cfg.gate.hard;
      cluster::InitialGateFit fit = s.store.initial_gate().fit(in);
      record = fit.record;
      train::StateDict saved(fit.saved.begin(), fit.saved.end());
      saved["g0"] = fit.g0;
      saved["temperature"] = torch::tensor(s.cfg.gate.temperature, torch::kDouble);
      record["sha256"] = train::save_state(saved, s.store.cluster_path());
      record["gate_mass"] = train::to_doubles(fit.g0.sum(0) / fit.g0.size(0));
      s.g0 = fit.g0;
    }
    // The frozen initial gate goes to every rank.
    s.g0 = comm::broadcast_tensor(s.comm, s.g0, 0);
    return record;
  }
};

}  // namespace

std::unique_ptr<Stage> make_cluster_stage() { return std::make_unique<ClusterStage>(); }

}  // namespace smoe::pipeline
