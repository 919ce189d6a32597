// Stage "joint_eval" (schemes joint, joint_distill and algorithm1_finetune):
// the jointly trained MoE (distill.pt when the scheme distilled its gate,
// finetune.pt after a fine-tuned Algorithm 1 — then report.json's
// "finetuned" and finetune-*.png —, else joint.pt) on the
// test split, in fixed batches shared round-robin among the ranks; each rank
// counts what its batches did (eval::JointTally), the counts are summed,
// and rank 0 writes report.json, accuracy_vs_macs.png and routing.png.
// Never recorded: it runs on every train and resume, and in `smoe eval`.
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "comm/tensor_collectives.h"
#include "core/atomic_file.h"
#include "core/heartbeat.h"
#include "core/log.h"
#include "core/progress.h"
#include "data/batch.h"
#include "data/sampler.h"
#include "eval/joint_report.h"
#include "eval/plots.h"
#include "eval/report.h"
#include "pipeline/provenance.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stage_traffic.h"
#include "pipeline/stages/common.h"
#include "train/checkpoint.h"
#include "train/tensors.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class JointEvalStage : public Stage {
 public:
  std::string name() const override { return "joint_eval"; }
  std::vector<std::string> keys() const override { return {"eval."}; }
  bool recorded() const override { return false; }
  json run(RunState& s) override {
    Progress clock("eval", 1, 1);
    const StageTraffic traffic(s.comm);
    // The model the scheme's latest training stage handed over (the same on
    // every rank: each rank ran, or restored, the same stages).
    SMOE_CHECK(s.model && s.model->joint(),
               "scheme '{}': joint_eval comes after no stage that trains a jointly trained MoE", s.cfg.scheme);
    const std::string stage = s.model->checkpoint, gate_kind = s.model->gate_kind;
    const bool finetuned = s.model->around_base;
    torch::NoGradGuard no_grad;
    std::shared_ptr<models::JointMoeImpl> moe =
        s.store.load_joint_model(*s.model, s.base.is_empty() ? nullptr : s.base.get());
    const int64_t K = moe->num_experts(), C = s.test->num_classes();
    log::info("eval      {} test samples ({}, {} gate)", s.test->size(), s.store.joint_path(stage), gate_kind);

    std::vector<int64_t> ids(static_cast<size_t>(s.test->size()));
    std::iota(ids.begin(), ids.end(), 0);
    auto batches = data::make_batches(ids, s.cfg.eval.batch_size, false);
    eval::JointTally tally(K, C);
    data::BatchLoader loader = s.test_loader(batches);  // the next batches read while the device computes
    while (std::optional<data::Batch> x = loader.next()) {
      heartbeat::beat("test batch");
      // Every expert on every sample: the per-expert figures; g, the mixture and top-k as routed.
      models::JointOutputs out = moe->forward_dense(train::to_device(x->images, s.rt.device));
      tally.add(train::to_device(x->labels, s.rt.device), out.gate_probs, out.expert_logits, out.mixture);
    }
    std::vector<int64_t> counts = tally.pack();
    s.comm.allreduce(comm::host_buffer(counts), comm::ReduceOp::sum);
    // The mixture as it was trained (a top-k gate's experts run only their samples).
    json timing;
    if (s.comm.is_root() && s.cfg.eval.timing_samples > 0 && s.test->size() > 0)
      timing = time_per_sample(s, {{"mixture", [&](const at::Tensor& x) { return moe->forward(x).mixture; }}});
    std::vector<std::string> devices = s.comm.allgather_bytes(s.rt.device_name());
    const json eval_comm = traffic.finish(s.comm);
    const std::vector<double> peaks = ranks_peak_rss_mb(s.comm);
    const json prov = provenance(s.comm, s.rt);
    if (!s.comm.is_root()) return json();
    tally.unpack(counts);
    SMOE_CHECK(tally.samples() == s.test->size(), "evaluation counted {} of {} test samples", tally.samples(),
               s.test->size());

    eval::JointCosts costs;
    // The shared trunk runs on every sample, as the gate does.
    costs.gate = static_cast<double>(moe->gate_macs() + moe->trunk_macs());
    for (int64_t k = 0; k < K; ++k) costs.experts.push_back(static_cast<double>(moe->expert_macs(k)));
    costs.gate_runs_every_expert = moe->gate().needs_expert_hidden();
    json report = tally.report(costs);
    report["scheme"] = s.cfg.scheme;
    report["model"] = stage;
    report["gate_kind"] = gate_kind;
    report["top_k"] = s.cfg.joint.top_k;
    report["trunk_blocks"] = s.cfg.experts.branch_after;
    report["trunk_macs"] = moe->trunk_macs();
    std::vector<std::string> archs;
    for (int64_t k = 0; k < K; ++k) archs.push_back(expert_arch(s.cfg, k));
    report["expert_archs"] = archs;
    report["dataset"] = s.test->manifest().name;
    report["num_experts"] = K;
    report["ranks"] = s.comm.size();
    report["test_samples"] = s.test->size();
    report["train_samples"] = s.train->size();
    json training = json::object();
    for (const auto& st : scheme_plan(s.cfg))
      if (st.recorded && s.run.done(st.name)) training[st.name] = s.run.record(st.name);
    json stages = recorded_stage_field(s, "seconds"), rss = recorded_stage_field(s, "peak_rss_mb"),
         comm = recorded_stage_field(s, "comm");
    stages["eval"] = clock.seconds();
    rss["eval"] = peaks;
    comm["eval"] = eval_comm;
    report["stage_comm"] = comm;
    report["training"] = training;
    report["train_error"] = training[stage].value("train_error", 0.0);
    report["stages"] = stages;
    report["peak_rss_mb"] = rss;
    report["runtime"] = {{"threads_per_rank", s.rt.threads}, {"device", s.rt.device_name()}, {"devices", devices}};
    report["provenance"] = prov;
    if (!timing.is_null()) report["inference_time"] = timing;
    // After Algorithm 1's own evaluation, the fine-tuned model is one more
    // section of its report, its plots prefixed.
    const std::string prefix = finetuned ? "finetune-" : "";
    if (finetuned && std::filesystem::exists(s.run.file("report.json"))) {
      json full = json::parse(read_file(s.run.file("report.json")));
      full["finetuned"] = report;
      write_file_atomic(s.run.file("report.json"), full.dump(2) + "\n");
    } else {
      write_file_atomic(s.run.file("report.json"), report.dump(2) + "\n");
    }

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
    // Each expert's share of the training samples (largest gate value), epoch by epoch.
    const json history = training[stage].value("load_history", json::array());
    if (!history.empty()) {
      std::vector<eval::Series> load;
      for (int64_t k = 0; k < K; ++k) {
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
    log::info(
        "eval      mixture {:.2f}% at {:.3f} MMACs | top-1 {:.2f}% at {:.3f} | top-2 {:.2f}% | train error {:.2f}% | "
        "H_gate {:.3f}, H_usage {:.3f}, I(E;Y) {:.3f} bits",
        100 * report["mixture"]["accuracy"].get<double>(), report["mixture"]["macs"].get<double>() / 1e6,
        100 * report["top1"]["accuracy"].get<double>(), report["top1"]["macs"].get<double>() / 1e6,
        100 * report["top2"]["accuracy"].get<double>(), 100 * report["train_error"].get<double>(),
        report["specialisation"]["gate_entropy"].get<double>(), report["specialisation"]["usage_entropy"].get<double>(),
        report["specialisation"]["mutual_information"].get<double>());
    log::info("eval      report: {}", s.run.file("report.json"));
    return json();
  }
};

}  // namespace

std::unique_ptr<Stage> make_joint_eval_stage() { return std::make_unique<JointEvalStage>(); }

}  // namespace smoe::pipeline
