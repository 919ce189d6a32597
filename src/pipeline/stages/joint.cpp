// Stage "joint" (scheme joint): a gate and K experts trained together, end
// to end, on the output mixture's NLL plus Krishnamurthy et al.'s
// regularisers (train/joint_trainer.h), data-parallel over every rank with
// exact gradient sums, a checkpoint after every epoch (joint_training.h).
// The model is saved as joint.pt.
#include "models/init_lock.h"
#include "models/joint_moe.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "pipeline/stages/joint_training.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class JointStage : public Stage {
 public:
  std::string name() const override { return "joint"; }
  std::vector<std::string> keys() const override {
    std::vector<std::string> keys = first_stage_keys();
    keys.insert(keys.end(),
                {"experts.count", "experts.arch", "experts.archs", "experts.branch_after", "gate.kind", "joint."});
    return keys;
  }
  void check(const Config& c) const override {
    // branch_after = n > 0: a shared trunk of n blocks of model.arch, trained with the gate and the experts.
    SMOE_CHECK(c.experts.branch_after < models::NetworkSpec::kBlocks,
               "config key 'experts.branch_after' is {}: scheme '{}' shares at most {} blocks as its trunk (0: the "
               "experts read the images)",
               c.experts.branch_after, c.scheme, models::NetworkSpec::kBlocks - 1);
    SMOE_CHECK(c.joint.top_k <= c.experts.count,
               "config key 'joint.top_k' is {}: more than experts.count ({}) experts cannot be chosen per sample (0: "
               "every expert)",
               c.joint.top_k, c.experts.count);
    for (int64_t owner : c.joint.class_owner)
      SMOE_CHECK(owner >= 0 && owner < c.experts.count,
                 "config key 'joint.class_owner' names expert {}: experts are 0 to {} (experts.count {})", owner,
                 c.experts.count - 1, c.experts.count);
  }
  void check_inputs(const Config& c, const data::Manifest& m) const override {
    check_batch_fits(c, m, "joint", c.joint.optim.batch_size);
    SMOE_CHECK(!c.joint.conditional || c.joint.class_owner.empty() ||
                   static_cast<int64_t>(c.joint.class_owner.size()) == m.num_classes,
               "config key 'joint.class_owner' has {} entries but the dataset has {} classes (one owner per class)",
               c.joint.class_owner.size(), m.num_classes);
    // Gates that read the base model's outputs have nothing to read here.
    const models::NetworkSpec spec = network_spec(c, m);
    const models::ProbeScope probe;  // an expert and a gate built to be asked: no draw from the ranks' generator
    const int64_t hidden = models::expert_architectures().get(expert_arch(c, 0))(expert_spec(c, spec, 0))->hidden_dim();
    const models::GateSpec g = joint_gate_spec(c, spec, c.gate.kind, hidden);
    SMOE_CHECK(models::gate_kinds().get(c.gate.kind)(g)->reads_inputs(),
               "config key 'gate.kind' is '{}': scheme '{}' needs a gate that reads the images (attentive, cnn, noisy, "
               "tempered)",
               c.gate.kind, c.scheme);
  }
  std::optional<TrainedModel> trained_model(const Config& c) const override {
    return TrainedModel{TrainedModel::Family::joint, "joint", c.gate.kind};
  }
  json run(RunState& s) override {
    auto moe = s.store.build_joint_moe(s.cfg.gate.kind);
    broadcast_module(s.comm, *moe, 0);
    train::JointTrainOptions o = joint_train_options(s, "joint", s.cfg.joint.optim, s.cfg.joint.reg);
    o.gate_lr_scale = s.cfg.joint.gate_lr_scale;
    o.mixup = s.cfg.joint.mixup;
    if (s.cfg.joint.conditional) {
      const int64_t C = s.train->num_classes(), K = s.cfg.experts.count;
      o.class_owner = s.cfg.joint.class_owner;
      if (o.class_owner.empty())
        for (int64_t c = 0; c < C; ++c) o.class_owner.push_back(c * K / C);
      SMOE_CHECK(static_cast<int64_t>(o.class_owner.size()) == C,
                 "config key 'joint.class_owner' has {} entries for {} classes", o.class_owner.size(), C);
    }
    return run_joint_training(s, *moe, o);
  }
};

}  // namespace

std::unique_ptr<Stage> make_joint_stage() { return std::make_unique<JointStage>(); }

}  // namespace smoe::pipeline
