// The evaluation of a jointly trained MoE (models/joint_moe.h): the model
// a training stage handed over (joint.pt, distill.pt when the scheme
// distilled its gate, finetune.pt after a fine-tuned Algorithm 1), every
// expert on every test sample, counted by eval::JointTally (the mixture as
// trained, top-1 and top-2 routing, each expert alone, the specialisation
// metrics, the routing table). report.json gets the training stages'
// records; a fine-tuned Algorithm 1 becomes its report's "finetuned"
// section, its plots prefixed "finetune-".
#include <torch/torch.h>

#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "data/batch.h"
#include "eval/joint_report.h"
#include "eval/plots.h"
#include "eval/report.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stages/evaluation.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class JointEvaluation : public Evaluation {
 public:
  JointEvaluation(RunState& s, const TrainedModel& model)
      : s_(s),
        model_(model),
        moe_(s.store.load_joint_model(model, s.base.is_empty() ? nullptr : s.base.get())),
        tally_(moe_->num_experts(), s.test->num_classes()) {}

  std::string what() const override {
    return fmt::format("{}, {} gate", s_.store.joint_path(model_.checkpoint), model_.gate_kind);
  }

  // Every expert on every sample: the per-expert figures; g, the mixture and top-k as routed.
  void add(const data::Batch& x) override {
    models::JointOutputs out = moe_->forward_dense(train::to_device(x.images, s_.rt.device));
    tally_.add(train::to_device(x.labels, s_.rt.device), out.gate_probs, out.expert_logits, out.mixture);
  }
  std::vector<int64_t> pack() const override { return tally_.pack(); }
  void unpack(const std::vector<int64_t>& counts) override { tally_.unpack(counts); }
  int64_t samples() const override { return tally_.samples(); }

  json report() override {
    const RunState& s = s_;
    const int64_t K = moe_->num_experts();
    eval::JointCosts costs;
    // The shared trunk runs on every sample, as the gate does.
    costs.gate = static_cast<double>(moe_->gate_macs() + moe_->trunk_macs());
    for (int64_t k = 0; k < K; ++k) costs.experts.push_back(static_cast<double>(moe_->expert_macs(k)));
    costs.gate_runs_every_expert = moe_->gate().needs_expert_hidden();
    json report = tally_.report(costs);
    report["scheme"] = s.cfg.scheme;
    report["model"] = model_.checkpoint;
    report["gate_kind"] = model_.gate_kind;
    report["top_k"] = s.cfg.joint.top_k;
    report["trunk_blocks"] = s.cfg.experts.branch_after;
    report["trunk_macs"] = moe_->trunk_macs();
    std::vector<std::string> archs;
    for (int64_t k = 0; k < K; ++k) archs.push_back(expert_arch(s.cfg, k));
    report["expert_archs"] = archs;
    return report;
  }

  // The mixture as it was trained (a top-k gate's experts run only their samples).
  TimedModels timed_models(const json&, json&) override {
    return {{"mixture", [this](const at::Tensor& x) { return moe_->forward(x).mixture; }}};
  }

  void write(json report) override {
    RunState& s = s_;
    json training = json::object();
    for (const auto& st : scheme_plan(s.cfg))
      if (st.recorded && s.run.done(st.name)) training[st.name] = s.run.record(st.name);
    report["training"] = training;
    report["train_error"] = training[model_.checkpoint].value("train_error", 0.0);
    // After Algorithm 1's own evaluation, the fine-tuned model is one more
    // section of its report, its plots prefixed.
    const bool finetuned = model_.around_base;
    const std::string prefix = finetuned ? "finetune-" : "";
    if (finetuned && std::filesystem::exists(s.run.file("report.json"))) {
      json full = json::parse(read_file(s.run.file("report.json")));
      full["finetuned"] = report;
      write_file_atomic(s.run.file("report.json"), full.dump(2) + "\n");
    } else {
      write_file_atomic(s.run.file("report.json"), report.dump(2) + "\n");
    }
    write_plots(s, report, training, prefix);
    log::info(
        "eval      mixture {:.2f}% at {:.3f} MMACs | top-1 {:.2f}% at {:.3f} | top-2 {:.2f}% | train error {:.2f}% | "
        "H_gate {:.3f}, H_usage {:.3f}, I(E;Y) {:.3f} bits",
        100 * report["mixture"]["accuracy"].get<double>(), report["mixture"]["macs"].get<double>() / 1e6,
        100 * report["top1"]["accuracy"].get<double>(), report["top1"]["macs"].get<double>() / 1e6,
        100 * report["top2"]["accuracy"].get<double>(), 100 * report["train_error"].get<double>(),
        report["specialisation"]["gate_entropy"].get<double>(), report["specialisation"]["usage_entropy"].get<double>(),
        report["specialisation"]["mutual_information"].get<double>());
  }

 private:
  // accuracy_vs_macs.png (each rule), routing.png and load.png (each
  // expert's share of the training samples, epoch by epoch).
  void write_plots(RunState& s, const json& report, const json& training, const std::string& prefix) const {
    std::vector<eval::Series> series;
    int color = 1;
    for (const char* rule : {"mixture", "top1", "top2"})
      series.push_back({rule,
                        {report[rule]["macs"].get<double>() / 1e6},
                        {100 * report[rule]["accuracy"].get<double>()},
                        false,
                        color++,
                        17,
                        {}});
    eval::plot_series(s.run.file(prefix + "accuracy_vs_macs.png"), s.test->manifest().name + ": jointly trained MoE",
                      "MMACs per image", "test accuracy (%)", series);
    eval::write_routing_plot(s.run.file(prefix + "routing.png"), report, s.test->manifest().class_names);
    const json history = training[model_.checkpoint].value("load_history", json::array());
    if (history.empty()) return;
    std::vector<eval::Series> load;
    for (int64_t k = 0; k < moe_->num_experts(); ++k) {
      eval::Series e{fmt::format("expert {}", k), {}, {}, true, static_cast<int>(1 + k % 15), 17, {}};
      for (size_t ep = 0; ep < history.size(); ++ep) {
        e.x.push_back(static_cast<double>(ep + 1));
        e.y.push_back(100 * history[ep].at(static_cast<size_t>(k)).get<double>());
      }
      load.push_back(e);
    }
    eval::plot_series(s.run.file(prefix + "load.png"), s.test->manifest().name + ": expert load during training",
                      "epoch", "training samples whose largest gate is the expert's (%)", load);
  }

  RunState& s_;
  TrainedModel model_;
  std::shared_ptr<models::JointMoeImpl> moe_;
  eval::JointTally tally_;
};

}  // namespace

std::unique_ptr<Evaluation> make_joint_evaluation(RunState& state, const TrainedModel& model) {
  SMOE_ASSERT(model.joint(), "a joint evaluation of a single-gate model");
  return std::make_unique<JointEvaluation>(state, model);
}

}  // namespace smoe::pipeline
