// The evaluation of Algorithm 1's single-gate MoE (models/moe.h) of one
// round: each batch's outputs counted by eval::Tally (every inference rule
// of Royer et al.: base, top-1 per ensembler, top-2, the anytime grid; the
// class oracle's routing with eval.class_oracle), the report built by
// eval::build_report; report.json gets the experts' records, the
// scheduler's cost ranking, the trunk cache and the EM rounds, and
// anytime.csv, accuracy_vs_macs.png and routing.png are written beside it.
#include <torch/torch.h>

#include <cmath>

#include "core/atomic_file.h"
#include "core/log.h"
#include "data/batch.h"
#include "eval/report.h"
#include "pipeline/run_state.h"
#include "pipeline/stages/evaluation.h"
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

// The run's records about Algorithm 1's training: the experts, the
// scheduler, the clustering, the trunk cache, the precision and the EM rounds.
void add_run_records(RunState& s, json& report) {
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

class SingleGateEvaluation : public Evaluation {
 public:
  SingleGateEvaluation(RunState& s, int64_t round)
      : s_(s), round_(round), moe_(s.store.load_moe(s.base, round)), tally_(make_tally(s, moe_, options_)) {
    if (options_.class_oracle) {
      const auto state = train::load_state(s.store.cluster_path());
      saved_ = {state.begin(), state.end()};
    }
  }

  std::string what() const override { return fmt::format("model of EM round {}", round_); }

  void add(const data::Batch& x) override {
    models::MoeOutputs out = moe_.forward(train::to_device(x.images, s_.rt.device));
    eval::TestOutputs t;
    t.labels = x.labels;
    t.base_logits = out.base_logits.cpu();
    t.gate = out.gate_probs.cpu();
    t.expert_logits = out.expert_logits.cpu();
    for (auto& [name, probs] : out.ensembled) t.ensembled[name] = probs.cpu();
    if (options_.class_oracle) t.oracle_gate = s_.store.initial_gate().oracle_gate(t.labels, saved_, K());
    tally_.add(t);
  }
  std::vector<int64_t> pack() const override { return tally_.pack(); }
  void unpack(const std::vector<int64_t>& counts) override { tally_.unpack(counts); }
  int64_t samples() const override { return tally_.samples(); }

  json report() override {
    // Costs: MACs per image, counted analytically per layer.
    eval::Costs costs;
    costs.base = moe_.base_macs();
    costs.gate = moe_.gate_macs();
    for (int64_t k = 0; k < K(); ++k) costs.experts.push_back(moe_.expert_macs(k));
    eval::Report r = eval::build_report(tally_, costs);
    anytime_csv_ = r.anytime_csv;
    json report = r.json;
    report["ensembler"] = s_.cfg.ensembler.kind;
    return report;
  }

  // The base model, the top-1 MoE and the anytime model at the tau that
  // matches the base model's accuracy (else its best tau), each through its
  // own sparse path (MoeModel::predict).
  TimedModels timed_models(const json& report, json& timing) override {
    const json& summary = report["anytime_summary"];
    const json tau_json =
        summary["tau_at_base_accuracy"].is_null() ? summary["best_tau"] : summary["tau_at_base_accuracy"];
    const double tau = tau_json.is_null() ? 0.0 : tau_json.get<double>();
    using P = models::MoeModel::Predict;
    const std::string ens = s_.cfg.ensembler.kind;
    timing["ensembler"] = ens;
    timing["anytime_tau"] = tau;
    return {{"base", [this](const at::Tensor& x) { return moe_.predict(x, P::base); }},
            {"moe_top1", [this, ens](const at::Tensor& x) { return moe_.predict(x, P::top1, ens); }},
            {"anytime", [this, ens, tau](const at::Tensor& x) { return moe_.predict(x, P::anytime, ens, tau); }}};
  }

  void write(json report) override {
    RunState& s = s_;
    add_run_records(s, report);
    write_file_atomic(s.run.file("report.json"), report.dump(2) + "\n");
    write_file_atomic(s.run.file("anytime.csv"), anytime_csv_);
    eval::write_report_plots(s.run.file("accuracy_vs_macs.png"), s.run.file("routing.png"), report,
                             s.test->manifest().name, s.test->manifest().class_names);
    const json& moe = report["moe"];
    log::info(
        "eval      base {:.2f}% at {:.2f} MMACs | MoE top-1 {:.2f}%, bagging {:.2f}%, stacking {:.2f}%, top-2 {:.2f}%",
        100 * report["base"]["accuracy"].get<double>(), report["base"]["macs"].get<double>() / 1e6,
        100 * moe["no_ensembling"]["accuracy"].get<double>(), 100 * moe["bagging"]["accuracy"].get<double>(),
        100 * moe["stacking"]["accuracy"].get<double>(), 100 * moe["top2"]["accuracy"].get<double>());
  }

 private:
  int64_t K() const { return s_.cfg.experts.count; }

  // Every ensembler's outputs are counted (MoeModel::forward runs them all).
  static eval::Tally make_tally(const RunState& s, const models::MoeModel& moe, eval::ReportOptions& o) {
    o.taus = s.cfg.eval.taus;
    o.ensembler = s.cfg.ensembler.kind;
    for (const auto& name : models::ensemblers().names()) o.ensembler_macs[name] = moe.ensembler_macs(name);
    o.num_classes = s.test->num_classes();
    o.class_oracle = s.cfg.eval.class_oracle;
    return eval::Tally(s.cfg.experts.count, models::ensemblers().names(), o);
  }

  RunState& s_;
  int64_t round_;
  models::MoeModel moe_;
  eval::ReportOptions options_;
  eval::Tally tally_;
  cluster::Tensors saved_;  // the initial gate's state, for the class oracle
  std::string anytime_csv_;
};

}  // namespace

std::unique_ptr<Evaluation> make_single_gate_evaluation(RunState& state, int64_t round) {
  return std::make_unique<SingleGateEvaluation>(state, round);
}

}  // namespace smoe::pipeline
