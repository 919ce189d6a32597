// Stage "cluster" (Algorithm 1 step 2): the initial-gate strategy of
// cluster.method turns the embeddings into the frozen initial gate g0 [N, K]
// (cluster.pt), every rank clustering its own rows; g0 goes to every rank.
#include <torch/torch.h>

#include "cluster/initial_gate.h"
#include "comm/tensor_collectives.h"
#include "core/error.h"
#include "core/rng.h"
#include "data/sampler.h"
#include "models/moe.h"
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
    // Every rank clusters its own rows: those it embedded, or after a resume
    // the same rows read back from embeddings.f32. Any split gives the same
    // centroids and g0 (distributed_kmeans.h); no rank holds all the rows.
    cluster::InitialGateInputs in;
    at::Tensor rows;
    if (s.local_prelogits.defined()) {
      in.ids = s.local_ids;
      rows = s.local_prelogits;
    } else {
      const int64_t batch = s.cfg.eval.batch_size, N = s.train->size();
      std::vector<int64_t> mine;
      for (int64_t b : data::round_robin((N + batch - 1) / batch, s.comm.rank(), s.comm.size()))
        for (int64_t i = b * batch; i < std::min(N, (b + 1) * batch); ++i) mine.push_back(i);
      in.ids = torch::tensor(mine, torch::kLong);
      rows = s.open_embeddings().rows(mine).narrow(1, 0, s.base->spec().prelogit_dim());
    }
    in.embedding = s.cfg.cluster.normalize ? models::normalize_rows(rows) : rows;
    in.labels = s.train_labels().index_select(0, in.ids);
    in.comm = &s.comm;
    in.num_classes = s.train->num_classes();
    in.kmeans.k = s.cfg.experts.count;
    in.kmeans.restarts = s.cfg.cluster.restarts;
    in.kmeans.max_iter = s.cfg.cluster.max_iter;
    in.kmeans.tol = s.cfg.cluster.tol;
    in.kmeans.seed = derive_seed(s.cfg.seed, "cluster");
    in.temperature = s.cfg.gate.temperature;
    in.hard = s.cfg.gate.hard;
    cluster::InitialGateFit fit = s.store.initial_gate().fit(in);
    // g0 (and the assignment) of every row, in id order, on the coordinator.
    at::Tensor gid = comm::gather_rows(s.comm, in.ids, 0);
    at::Tensor g0 = comm::gather_rows(s.comm, fit.g0.cpu().contiguous(), 0);
    at::Tensor assign;
    if (fit.assign.defined()) assign = comm::gather_rows(s.comm, fit.assign.cpu().contiguous(), 0);
    json record;
    if (s.comm.is_root()) {
      record = fit.record;
      train::StateDict saved(fit.saved.begin(), fit.saved.end());
      s.g0 = comm::reorder_by_id(g0, gid);
      saved["g0"] = s.g0;
      if (assign.defined()) saved["assign"] = comm::reorder_by_id(assign, gid);
      saved["temperature"] = torch::tensor(s.cfg.gate.temperature, torch::kDouble);
      record["sha256"] = train::save_state(saved, s.store.cluster_path());
      record["gate_mass"] = train::to_doubles(s.g0.sum(0) / s.g0.size(0));
    }
    // The frozen initial gate goes to every rank.
    s.g0 = comm::broadcast_tensor(s.comm, s.g0, 0);
    return record;
  }
};

}  // namespace

std::unique_ptr<Stage> make_cluster_stage() { return std::make_unique<ClusterStage>(); }

}  // namespace smoe::pipeline
