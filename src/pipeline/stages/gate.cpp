// Stage "gate" (Algorithm 1 step 3): on the coordinator, the gate g starts
// from what the initial-gate strategy gives (the closed form of g0 for
// K-means; the whole of a fixed routing) and, when it has weights, is fitted
// to g0 by KL(g0 || g) on the embeddings (gate.pt), both read by batch.
#include <torch/torch.h>

#include "core/log.h"
#include "core/rng.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "train/checkpoint.h"
#include "train/expert_trainer.h"
#include "train/losses.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class GateStage : public Stage {
 public:
  std::string name() const override { return "gate"; }
  std::vector<std::string> keys() const override { return {"gate."}; }
  json run(RunState& s) override {
    json record;
    if (!s.comm.is_root()) return record;
    const train::RowCache& g0 = s.open_g0();
    models::Gate gate = s.store.build_gate(torch::kCPU);
    const auto cluster_state = train::load_state(s.store.cluster_path());
    s.store.initial_gate().init_gate(*gate, {cluster_state.begin(), cluster_state.end()}, s.cfg.gate.temperature);
    record["kind"] = s.store.initial_gate().gate_kind(s.cfg.gate.kind);
    if (gate->trainable()) {
      // The features are read by batch (from RAM or disk): rank 0 never holds them all.
      const train::GateRowsOf x = [&](const std::vector<int64_t>& ids) { return s.gate_features(ids); };
      const int64_t batch = s.cfg.eval.batch_size;
      const train::RowsOf targets = [&](const std::vector<int64_t>& ids) { return g0.rows(ids); };
      const int64_t n = g0.size();
      record["kl_initial"] = train::gate_fit(*gate, x, targets, n, batch).kl;
      train::train_gate(*gate, x, targets, n, s.cfg.gate.optim, derive_seed(s.cfg.seed, "gate"));
      const train::GateFit fit = train::gate_fit(*gate, x, targets, n, batch);
      record["kl_final"] = fit.kl;
      record["top1_agreement"] = fit.top1_agreement;
      log::info("gate      KL(g0 || g) {:.4g} -> {:.4g}; top-1 agreement with g0 {:.2f}%",
                record["kl_initial"].get<double>(), record["kl_final"].get<double>(),
                100 * record["top1_agreement"].get<double>());
    }
    record["sha256"] = train::save_module(*gate, s.store.gate_path(0));
    return record;
  }
};

}  // namespace

std::unique_ptr<Stage> make_gate_stage() { return std::make_unique<GateStage>(); }

}  // namespace smoe::pipeline
