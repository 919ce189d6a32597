// Stage "eval": one pass of the final round's MoE model (models/moe.h) over
// the test split, in fixed batches shared round-robin among the ranks; each
// rank counts what its batches did (eval::Tally), the counts are summed, and
// the coordinator builds the report (eval/report.h) and writes report.json,
// anytime.csv and the plots. Never recorded: it runs
// on every train and resume, and alone in `smoe eval`.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <numeric>

#include "comm/tensor_collectives.h"
#include "core/atomic_file.h"
#include "core/heartbeat.h"
#include "core/log.h"
#include "core/progress.h"
#include "data/batch.h"
#include "data/sampler.h"
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

// Pearson correlation of two series (0 when either is constant).
double pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const double n = static_cast<double>(a.size());
  double ma = 0, mb = 0;
  for (size_t i = 0; i < a.size(); ++i) ma += a[i] / n, mb += b[i] / n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 0.0;
}

// The bookkeeping around the report: experts, stage times, the trunk cache,
// the runtime and the EM rounds.
void add_run_records(RunState& s, json& report, const std::vector<std::string>& devices, double eval_seconds,
                     const std::vector<double>& eval_peaks, const json& eval_comm) {
  const int64_t K = s.cfg.experts.count;
  json experts_json = json::array();
  for (int64_t k = 0; k < K; ++k) {
    json r = s.run.record(expert_task_key(k, 0));
    json e = {{"id", k}};
    for (const char* key : {"arch", "optimizer", "lr", "epochs", "macs", "predicted_cost", "gate_mass",
                            "train_samples_effective", "seconds", "rank", "checkpoint_sha256", "logits_mode"})
      if (r.contains(key)) e[key] = r[key];
    for (const auto& [key, value] : r.items())
      if (key.size() > 7 && key.compare(key.size() - 7, 7, "_sha256") == 0) e[key] = value;
    experts_json.push_back(e);
  }
  report["experts"] = experts_json;
  // How well the scheduler's predicted costs ranked the experts' real durations.
  std::vector<double> predicted, seconds;
  for (const auto& e : experts_json)
    if (e.contains("predicted_cost") && e.contains("seconds")) {
      predicted.push_back(e["predicted_cost"].get<double>());
      seconds.push_back(e["seconds"].get<double>());
    }
  if (predicted.size() >= 2) report["scheduler"] = {{"cost_seconds_correlation", pearson(predicted, seconds)}};
  if (s.run.done("cluster") && s.run.record("cluster").contains("quality"))
    report["cluster_quality"] = s.run.record("cluster")["quality"];
  json stages = recorded_stage_field(s, "seconds");
  stages["eval"] = eval_seconds;
  report["stages"] = stages;
  // Each rank's peak resident memory per stage (MiB), as the stage recorded
  // it when it ran, and what each stage moved between the ranks.
  json peaks = recorded_stage_field(s, "peak_rss_mb");
  peaks["eval"] = eval_peaks;
  report["peak_rss_mb"] = peaks;
  json comm = recorded_stage_field(s, "comm");
  comm["eval"] = eval_comm;
  report["stage_comm"] = comm;
  if (s.run.done("experts")) {
    // Without the cache every expert epoch (and its logits pass) would run
    // the trunk on every sample it sees.
    const double cache_s = s.run.record("experts").value("trunk_cache_seconds", 0.0);
    double seen = 0;
    for (int64_t r = 0; r <= s.final_round(); ++r)
      for (int64_t k = 0; k < K; ++k) seen += s.run.record(expert_task_key(k, r)).value("samples_seen", 0.0);
    const double passes =
        seen / static_cast<double>(s.train->size()) + static_cast<double>(K * (1 + 2 * s.final_round()));
    // One cached pass took cache_s with the ranks sharing the work; a rank
    // without the cache pays a whole pass (about P x cache_s) per pass.
    const double ranks = static_cast<double>(s.comm.size());
    report["trunk_cache"] = {
        {"enabled", s.run.record("experts").value("trunk_cache_mode", "off") != "off"},
        {"mode", s.run.record("experts").value("trunk_cache_mode", "off")},
        {"bytes", s.run.record("experts").value("trunk_cache_bytes", int64_t{0})},
        {"seconds_spent", cache_s},
        {"trunk_passes_avoided", passes},
        {"estimated_rank_seconds_saved", std::max(0.0, ranks * cache_s * passes - ranks * cache_s)}};
  }
  report["runtime"] = {{"threads_per_rank", s.rt.threads}, {"device", s.rt.device_name()}, {"devices", devices}};
  // What the training forward passes ran in (base.precision, experts.precision:
  // a bfloat16 request falls back to float32 where the hardware lacks it).
  report["precision"] = {
      {"base", s.run.done("base") ? s.run.record("base").value("precision", "float32") : "float32"},
      {"experts", s.run.done(expert_task_key(0, 0)) ? s.run.record(expert_task_key(0, 0)).value("precision", "float32")
                                                    : "float32"}};
  json em = json::array();
  for (int64_t r = 1; r <= s.final_round(); ++r) em.push_back(s.run.record(fmt::format("em/{}", r)));
  report["em_steps"] = s.final_round();
  if (s.final_round() > 0) report["em"] = em;
}

// Wall-clock inference time per sample of the base model, the top-1 MoE and
// the anytime model at the tau that matches the base model's accuracy (else
// its best tau), each through its own sparse path (MoeModel::predict).
json time_inference(RunState& s, models::MoeModel& moe, const json& report) {
  const json& summary = report["anytime_summary"];
  const json tau_json =
      summary["tau_at_base_accuracy"].is_null() ? summary["best_tau"] : summary["tau_at_base_accuracy"];
  const double tau = tau_json.is_null() ? 0.0 : tau_json.get<double>();
  using P = models::MoeModel::Predict;
  const std::string& ens = s.cfg.ensembler.kind;
  json t = time_per_sample(s, {{"base", [&](const at::Tensor& x) { return moe.predict(x, P::base); }},
                               {"moe_top1", [&](const at::Tensor& x) { return moe.predict(x, P::top1, ens); }},
                               {"anytime", [&](const at::Tensor& x) { return moe.predict(x, P::anytime, ens, tau); }}});
  t["ensembler"] = ens;
  t["anytime_tau"] = tau;
  return t;
}

}  // namespace

json time_per_sample(RunState& s, const std::vector<std::pair<std::string, TimedModel>>& models) {
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
    SMOE_CHECK(!c.eval.class_oracle || cluster::initial_gates().get(c.cluster.method)->has_oracle(),
               "config key 'eval.class_oracle': cluster.method '{}' has no class oracle (per_class has)",
               c.cluster.method);
  }
  json run(RunState& s) override {
    Progress clock("eval", 1, 1);
    const StageTraffic traffic(s.comm);
    log::info("eval      {} test samples (model of EM round {})", s.test->size(), s.final_round());
    json report = evaluate_test(s, s.final_round());
    // Each rank's device, for the report.
    std::vector<std::string> devices = s.comm.allgather_bytes(s.rt.device_name());
    const json eval_comm = traffic.finish(s.comm);
    const std::vector<double> peaks = ranks_peak_rss_mb(s.comm);
    const json prov = provenance(s.comm, s.rt);
    if (!s.comm.is_root()) return json();
    const std::string csv = report["anytime_csv"];
    report.erase("anytime_csv");
    add_run_records(s, report, devices, clock.seconds(), peaks, eval_comm);
    report["provenance"] = prov;
    write_file_atomic(s.run.file("report.json"), report.dump(2) + "\n");
    write_file_atomic(s.run.file("anytime.csv"), csv);
    eval::write_report_plots(s.run.file("accuracy_vs_macs.png"), s.run.file("routing.png"), report,
                             s.test->manifest().name, s.test->manifest().class_names);
    const json& moe = report["moe"];
    log::info(
        "eval      base {:.2f}% at {:.2f} MMACs | MoE top-1 {:.2f}%, bagging {:.2f}%, stacking {:.2f}%, top-2 {:.2f}%",
        100 * report["base"]["accuracy"].get<double>(), report["base"]["macs"].get<double>() / 1e6,
        100 * moe["no_ensembling"]["accuracy"].get<double>(), 100 * moe["bagging"]["accuracy"].get<double>(),
        100 * moe["stacking"]["accuracy"].get<double>(), 100 * moe["top2"]["accuracy"].get<double>());
    log::info("eval      report: {}", s.run.file("report.json"));
    return json();
  }
};

}  // namespace

json evaluate_test(RunState& s, int64_t round) {
  const int64_t K = s.cfg.experts.count, C = s.test->num_classes();
  torch::NoGradGuard no_grad;
  models::MoeModel moe = s.store.load_moe(s.base, round);

  eval::ReportOptions o;
  o.taus = s.cfg.eval.taus;
  o.ensembler = s.cfg.ensembler.kind;
  for (const auto& name : models::ensemblers().names()) o.ensembler_macs[name] = moe.ensembler_macs(name);
  o.num_classes = C;
  o.class_oracle = s.cfg.eval.class_oracle;
  cluster::Tensors saved;
  if (o.class_oracle) {
    const auto state = train::load_state(s.store.cluster_path());
    saved = {state.begin(), state.end()};
  }

  // Fixed batches of consecutive test ids, shared round-robin; each rank
  // counts what its batches did, and only the counts are summed.
  std::vector<int64_t> all_ids(static_cast<size_t>(s.test->size()));
  std::iota(all_ids.begin(), all_ids.end(), 0);
  auto batches = data::make_batches(all_ids, s.cfg.eval.batch_size, false);
  eval::Tally tally(K, models::ensemblers().names(), o);  // MoeModel::forward runs every ensembler
  data::BatchLoader loader = s.test_loader(batches);      // the next batches read while the device computes
  while (std::optional<data::Batch> x = loader.next()) {
    heartbeat::beat("test batch");
    models::MoeOutputs out = moe.forward(train::to_device(x->images, s.rt.device));
    eval::TestOutputs t;
    t.labels = x->labels;
    t.base_logits = out.base_logits.cpu();
    t.gate = out.gate_probs.cpu();
    t.expert_logits = out.expert_logits.cpu();
    for (auto& [name, probs] : out.ensembled) t.ensembled[name] = probs.cpu();
    if (o.class_oracle) t.oracle_gate = s.store.initial_gate().oracle_gate(t.labels, saved, K);
    tally.add(t);
  }
  std::vector<int64_t> counts = tally.pack();
  s.comm.allreduce(comm::host_buffer(counts), comm::ReduceOp::sum);
  if (!s.comm.is_root()) return json();
  tally.unpack(counts);
  SMOE_CHECK(tally.samples() == s.test->size(), "evaluation counted {} of {} test samples", tally.samples(),
             s.test->size());

  // Costs: MACs per image, counted analytically per layer.
  eval::Costs costs;
  costs.base = moe.base_macs();
  costs.gate = moe.gate_macs();
  for (int64_t k = 0; k < K; ++k) costs.experts.push_back(moe.expert_macs(k));
  eval::Report r = eval::build_report(tally, costs);
  json report;
  report["dataset"] = s.test->manifest().name;
  report["num_experts"] = K;
  report["ranks"] = s.comm.size();
  report["test_samples"] = s.test->size();
  report["train_samples"] = s.train->size();
  report["ensembler"] = s.cfg.ensembler.kind;
  report.update(r.json);
  report["anytime_csv"] = r.anytime_csv;
  if (s.cfg.eval.timing_samples > 0 && s.test->size() > 0) report["inference_time"] = time_inference(s, moe, report);
  return report;
}

std::unique_ptr<Stage> make_eval_stage() { return std::make_unique<EvalStage>(); }

}  // namespace smoe::pipeline
