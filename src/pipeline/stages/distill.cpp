// Stage "distill" (Krishnamurthy et al. Section 5.1): the experts of the
// jointly trained MoE are frozen and a plain gate (distill.gate_kind),
// started from the trained gate's shared layers, learns to route alone, on
// the same mixture loss and its own regularisers. An attentive gate needs
// every expert's features; the distilled gate gives back conditional
// computation. The experts' weights stay bit-identical. Saved as distill.pt.
#include "core/log.h"
#include "models/init_lock.h"
#include "models/joint_moe.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "pipeline/stages/joint_training.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class DistillStage : public Stage {
 public:
  std::string name() const override { return "distill"; }
  std::vector<std::string> keys() const override { return {"distill."}; }
  void check(const Config& c) const override { models::gate_kinds().get(c.distill.gate_kind, "distill.gate_kind"); }
  void check_inputs(const Config& c, const data::Manifest& m) const override {
    check_batch_fits(c, m, "distill", c.distill.optim.batch_size);
    // The distilled gate routes alone: a kind that reads the experts' features cannot.
    const models::NetworkSpec spec = network_spec(c, m);
    const models::ProbeScope probe;  // built to be asked: no draw from the ranks' generator
    const int64_t hidden = models::expert_architectures().get(expert_arch(c, 0))(expert_spec(c, spec, 0))->hidden_dim();
    const models::GateSpec g = joint_gate_spec(c, spec, c.distill.gate_kind, hidden);
    SMOE_CHECK(!models::gate_kinds().get(c.distill.gate_kind)(g)->needs_expert_hidden(),
               "config key 'distill.gate_kind' is '{}': the distilled gate must route without the experts' features",
               c.distill.gate_kind);
  }
  std::optional<TrainedModel> trained_model(const Config& c) const override {
    return TrainedModel{TrainedModel::Family::joint, "distill", c.distill.gate_kind};
  }
  json run(RunState& s) override {
    auto moe = s.store.load_joint_moe(s.store.joint_path("joint"), s.cfg.gate.kind);
    models::Gate gate = s.store.build_joint_gate(s.cfg.distill.gate_kind, moe->expert(0).hidden_dim(), "distill-init");
    SMOE_CHECK(!gate->needs_expert_hidden(),
               "config key 'distill.gate_kind' is '{}': the distilled gate must route without the experts' features",
               s.cfg.distill.gate_kind);
    const int64_t copied = gate->init_from(moe->gate());
    log::info("distill   {} gate started from {} tensors of the trained {} gate", s.cfg.distill.gate_kind, copied,
              s.cfg.gate.kind);
    moe->set_gate(gate);
    broadcast_module(s.comm, moe->gate(), 0);
    train::JointTrainOptions o = joint_train_options(s, "distill", s.cfg.distill.optim, s.cfg.distill.reg);
    o.freeze_experts = true;
    json record = run_joint_training(s, *moe, o);
    record["gate_tensors_copied"] = copied;
    return record;
  }
};

}  // namespace

std::unique_ptr<Stage> make_distill_stage() { return std::make_unique<DistillStage>(); }

}  // namespace smoe::pipeline
