// Stage "finetune" (scheme algorithm1_finetune): Algorithm 1's MoE trained
// further as a jointly trained one — what none of the papers' systems
// offers. The model is ModelStore::build_finetune_moe: the base model's
// trunk, frozen; Algorithm 1's gate on the base model's embedding (the base
// model's tail frozen inside it); the trained experts; y_hat = sum_e g(e|x)
// softmax(f_e(x)), trained on the mixture NLL (Krishnamurthy et al.'s loss)
// with finetune.* optimiser settings and regularisers, data-parallel with
// exact gradient sums, a checkpoint per epoch (joint_training.h). With
// finetune.freeze_experts only the gate trains on the frozen experts (a gate
// trained on frozen experts: Krishnamurthy et al. Section 4.2). Saved as
// finetune.pt; the eval stage after it evaluates it into report.json's "finetuned".
#include "models/joint_moe.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/common.h"
#include "pipeline/stages/joint_training.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class FinetuneStage : public Stage {
 public:
  std::string name() const override { return "finetune"; }
  std::vector<std::string> keys() const override { return {"finetune.", "joint.micro_batch"}; }
  void check(const Config& c) const override {
    SMOE_CHECK(c.experts.branch_after >= 1,
               "config key 'experts.branch_after' is 0: scheme '{}' fine-tunes Algorithm 1's MoE, whose experts read "
               "a shared trunk",
               c.scheme);
  }
  void check_inputs(const Config& c, const data::Manifest& m) const override {
    check_batch_fits(c, m, "finetune", c.finetune.optim.batch_size);
  }
  std::optional<TrainedModel> trained_model(const Config&) const override {
    return TrainedModel{TrainedModel::Family::joint, "finetune", "algorithm1", /*around_base=*/true};
  }
  json run(RunState& s) override {
    auto moe = s.store.build_finetune_moe(*s.base);
    train::JointTrainOptions o = joint_train_options(s, "finetune", s.cfg.finetune.optim, s.cfg.finetune.reg);
    o.freeze_experts = s.cfg.finetune.freeze_experts;
    return run_joint_training(s, *moe, o);
  }
};

}  // namespace

std::unique_ptr<Stage> make_finetune_stage() { return std::make_unique<FinetuneStage>(); }

}  // namespace smoe::pipeline
