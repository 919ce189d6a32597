// Stage "eval": the model the scheme's latest training stage handed over
// (RunState::model: Algorithm 1's single-gate MoE of the final round, or a
// jointly trained one) on the test split, through its family's evaluation
// (evaluation.h): fixed batches shared round-robin among the ranks, each
// rank counting what its batches did, the counts summed; rank 0 builds
// the report, adds the run's common records (stage times, memory, traffic,
// runtime, provenance) and writes report.json and the plots. Never
// recorded: it runs on every train and resume, and alone in `smoe eval`.
#include <torch/torch.h>

#include <chrono>
#include <numeric>

#include "core/heartbeat.h"
#include "core/log.h"
#include "core/progress.h"
#include "data/batch.h"
#include "data/sampler.h"
#include "pipeline/provenance.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "pipeline/stage_traffic.h"
#include "pipeline/stages/evaluation.h"

using nlohmann::json;

namespace smoe::pipeline {

std::unique_ptr<Evaluation> make_evaluation(RunState& s, const TrainedModel& model, int64_t round) {
  switch (model.family) {
    case TrainedModel::Family::single_gate:
      return make_single_gate_evaluation(s, round);
    case TrainedModel::Family::joint:
      return make_joint_evaluation(s, model);
  }
  SMOE_ASSERT(false, "an MoE family without an evaluation");
  return nullptr;
}

json evaluate_test(RunState& s, Evaluation& e) {
  torch::NoGradGuard no_grad;
  // Fixed batches of consecutive test ids, shared round-robin; each rank
  // counts what its batches did, and only the counts are summed.
  std::vector<int64_t> ids(static_cast<size_t>(s.test->size()));
  std::iota(ids.begin(), ids.end(), 0);
  data::BatchLoader loader = s.test_loader(data::make_batches(ids, s.cfg.eval.batch_size, false));
  while (std::optional<data::Batch> x = loader.next()) {  // the next batches read while the device computes
    heartbeat::beat("test batch");
    e.add(*x);
  }
  std::vector<int64_t> counts = e.pack();
  s.comm.allreduce(comm::host_buffer(counts), comm::ReduceOp::sum);
  if (!s.comm.is_root()) return json();
  e.unpack(counts);
  SMOE_CHECK(e.samples() == s.test->size(), "evaluation counted {} of {} test samples", e.samples(), s.test->size());
  json report = e.report();
  report["dataset"] = s.test->manifest().name;
  report["num_experts"] = s.cfg.experts.count;
  report["ranks"] = s.comm.size();
  report["test_samples"] = s.test->size();
  report["train_samples"] = s.train->size();
  if (s.cfg.eval.timing_samples > 0 && s.test->size() > 0) {
    json extra = json::object();
    const Evaluation::TimedModels models = e.timed_models(report, extra);
    json timing = time_per_sample(s, models);
    timing.update(extra);
    report["inference_time"] = timing;
  }
  return report;
}

json time_per_sample(RunState& s, const Evaluation::TimedModels& models) {
  const int64_t n = std::min(s.cfg.eval.timing_samples, s.test->size());
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<at::Tensor> batches;
  for (const auto& b : data::make_batches(ids, s.cfg.eval.batch_size, false))
    batches.push_back(data::make_batch(*s.test, b, data::Transform{}).images.to(s.rt.device));
  json ms = json::object();
  std::string line;
  for (const auto& [name, model] : models) {
    heartbeat::beat("inference timing");
    model(batches.front()).argmax(1).cpu();  // warm-up
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& x : batches) model(x).argmax(1).cpu();
    const double v =
        1000.0 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(n);
    ms[name] = v;
    line += fmt::format("{}{} {:.3f}", line.empty() ? "" : ", ", name, v);
  }
  log::info("eval      inference ms per sample ({} samples, batch {}, {} threads, {}): {}", n, s.cfg.eval.batch_size,
            s.rt.threads, s.rt.device_name(), line);
  return {{"samples", n},
          {"batch_size", s.cfg.eval.batch_size},
          {"threads", s.rt.threads},
          {"device", s.rt.device_name()},
          {"ms_per_sample", ms}};
}

namespace {

class EvalStage : public Stage {
 public:
  std::string name() const override { return "eval"; }
  std::vector<std::string> keys() const override { return {"eval."}; }
  bool recorded() const override { return false; }
  void check(const Config& c) const override {
    SMOE_CHECK(scheme_model(c).has_value(), "scheme '{}': stage eval comes after no stage that trains an MoE",
               c.scheme);
    SMOE_CHECK(!c.eval.class_oracle || cluster::initial_gates().get(c.cluster.method)->has_oracle(),
               "config key 'eval.class_oracle': cluster.method '{}' has no class oracle (per_class has)",
               c.cluster.method);
  }
  json run(RunState& s) override {
    Progress clock("eval", 1, 1);
    const StageTraffic traffic(s.comm);
    // The model the scheme's latest training stage handed over (the same on
    // every rank: each rank ran, or restored, the same stages).
    SMOE_CHECK(s.model.has_value(), "scheme '{}': stage eval comes after no stage that trains an MoE", s.cfg.scheme);
    std::unique_ptr<Evaluation> e = make_evaluation(s, *s.model, s.final_round());
    log::info("eval      {} test samples ({})", s.test->size(), e->what());
    json report = evaluate_test(s, *e);
    // Each rank's device, for the report.
    std::vector<std::string> devices = s.comm.allgather_bytes(s.rt.device_name());
    const json eval_comm = traffic.finish(s.comm);
    const std::vector<double> peaks = ranks_peak_rss_mb(s.comm);
    const json prov = provenance(s.comm, s.rt);
    if (!s.comm.is_root()) return json();
    // Each stage's time and each rank's peak resident memory (MiB) as the
    // stage recorded it when it ran, and what each stage moved between the ranks.
    json stages = recorded_stage_field(s, "seconds"), peak = recorded_stage_field(s, "peak_rss_mb"),
         comm = recorded_stage_field(s, "comm");
    stages["eval"] = clock.seconds();
    peak["eval"] = peaks;
    comm["eval"] = eval_comm;
    report["stages"] = stages;
    report["peak_rss_mb"] = peak;
    report["stage_comm"] = comm;
    report["runtime"] = {{"threads_per_rank", s.rt.threads}, {"device", s.rt.device_name()}, {"devices", devices}};
    report["provenance"] = prov;
    e->write(std::move(report));
    log::info("eval      report: {}", s.run.file("report.json"));
    return json();
  }
};

}  // namespace

std::unique_ptr<Stage> make_eval_stage() { return std::make_unique<EvalStage>(); }

}  // namespace smoe::pipeline
