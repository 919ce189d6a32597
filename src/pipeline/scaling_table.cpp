#include "pipeline/scaling_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/atomic_file.h"
#include "core/error.h"
#include "eval/plots.h"
#include "pipeline/rank_use.h"

namespace smoe::pipeline {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const fs::path& path) {
  std::ifstream in(path);
  SMOE_CHECK(in.good(), "{}: cannot read{}", path.string(),
             path.filename() == "report.json" ? " (that run has not finished: run the study again)" : "");
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: not JSON: {}", path.string(), e.what()));
  }
}

// One finished run of the study, read once.
struct StudyRun {
  std::string dir;
  json report, done;  // report.json; run.json's "done" records
};

std::vector<StudyRun> read_runs(const std::string& out, const std::vector<int>& ranks) {
  std::vector<StudyRun> runs;
  for (int P : ranks) {
    const std::string dir = study_run_dir(out, P);
    runs.push_back({dir, read_json(fs::path(dir) / "report.json"),
                    read_json(fs::path(dir) / "run.json").value("done", json::object())});
  }
  return runs;
}

double max_of(const json& per_rank) {
  double m = 0;
  if (per_rank.is_array())
    for (const auto& v : per_rank)
      if (v.is_number()) m = std::max(m, v.get<double>());
  return m;
}

// Every "...sha256" leaf of run.json's records (but the optimiser states',
// which record the device their tensors were on) and every "accuracy" leaf of
// report.json, by path: what a run computed.
void results_of(const json& j, const std::string& path, bool hashes, std::map<std::string, std::string>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      // A stage's per-epoch resume point (STAGE/progress) is no result: its
      // batch-norm running statistics are rank 0's micro-batches', which the
      // stage's calibration replaces at its end.
      if (path.empty() && k.size() > 9 && k.compare(k.size() - 9, 9, "/progress") == 0) continue;
      const std::string p = path.empty() ? k : path + "." + k;
      const bool hash = k.size() >= 6 && k.compare(k.size() - 6, 6, "sha256") == 0 && k != "optim_sha256";
      if (hashes && hash && v.is_string())
        out[p] = v.get<std::string>();
      else if (!hashes && k == "accuracy" && v.is_number())
        out[p] = fmt::format("{:.17g}", v.get<double>());
      else
        results_of(v, p, hashes, out);
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) results_of(j[i], path + "." + std::to_string(i), hashes, out);
  }
}

// Compares what each run computed with the baseline's.
void check_same_results(const std::vector<StudyRun>& runs, const std::vector<int>& ranks, ScalingResult& r) {
  std::map<std::string, std::string> hashes0, acc0;
  results_of(runs[0].done, "", true, hashes0);
  results_of(runs[0].report, "", false, acc0);
  for (size_t i = 1; i < ranks.size(); ++i) {
    std::map<std::string, std::string> hashes, acc;
    results_of(runs[i].done, "", true, hashes);
    results_of(runs[i].report, "", false, acc);
    for (const auto* pair : {&hashes0, &acc0}) {
      const auto& mine = pair == &hashes0 ? hashes : acc;
      for (const auto& [key, value] : *pair) {
        const auto it = mine.find(key);
        if (it == mine.end())
          r.problems.push_back(fmt::format("P={} has no {} (P={} has)", ranks[i], key, ranks[0]));
        else if (it->second != value)
          r.problems.push_back(fmt::format("{} differs: P={} {} , P={} {}", key, ranks[0], value.substr(0, 16),
                                           ranks[i], it->second.substr(0, 16)));
      }
    }
  }
  if (r.problems.empty())
    r.checks.push_back(
        fmt::format("the {} hashes of run.json (every stage's outputs and checkpoints) and the {} "
                    "accuracies of report.json are equal at P = {}",
                    hashes0.size(), acc0.size(), fmt::join(ranks, ", ")));
}

void warn_packing(const StageMeasure& m, const std::vector<int>& ranks, ScalingResult& r) {
  if (m.units <= 0 || m.kind == WorkKind::rows) return;
  std::vector<std::string> caps;
  for (int P : ranks) {
    const double e = packing_efficiency(m.units, P);
    if (e < 1 - 1e-9) caps.push_back(fmt::format("P={}: {:.0f}% ({:.0f}% idle)", P, 100 * e, 100 * (1 - e)));
  }
  if (caps.empty()) return;
  const std::string what = m.kind == WorkKind::tasks ? fmt::format("{} tasks (one per expert)", m.units)
                                                     : fmt::format("{} micro-batches per step", m.units);
  r.warnings.push_back(fmt::format("{}: {} cannot fill every rank; the best efficiency whole units allow is {}",
                                   m.stage, what, fmt::join(caps, ", ")));
}

std::string mb(double bytes) { return fmt::format("{:.2f}", bytes / 1e6); }

std::string percent_error(double predicted, double measured) {
  if (measured <= 0) return "";
  const long e = std::lround(100 * (predicted / measured - 1));
  return e == 0 ? "0%" : fmt::format("{:+d}%", e);
}

}  // namespace

std::string study_run_dir(const std::string& out, int P) { return (fs::path(out) / fmt::format("P{}", P)).string(); }

ScalingResult scaling_result(const std::string& out, const CollectiveModel& collectives,
                             const std::vector<int>& predict_at, const WorkScale& work) {
  const json study = read_json(fs::path(out) / "study.json");
  ScalingResult r;
  const std::string mode = study.value("mode", "strong");
  const auto parsed = options::from_name<ScalingMode>(mode);
  SMOE_CHECK(parsed.has_value(), "{}/study.json: mode '{}' is neither strong nor weak", out, mode);
  r.mode = *parsed;
  const std::vector<int> ranks = study.at("ranks").get<std::vector<int>>();
  const std::vector<std::string> stages = study.at("stages").get<std::vector<std::string>>();
  SMOE_CHECK(!ranks.empty(), "{}/study.json: no rank counts", out);
  r.collectives = collectives;
  r.work = work;
  for (const auto& [stage, f] : work) {
    SMOE_CHECK(stage.empty() || std::find(stages.begin(), stages.end(), stage) != stages.end(),
               "smoe scaling: --work-scale {}: the study timed no stage '{}' ({})", stage, stage,
               fmt::join(stages, ", "));
    SMOE_CHECK(f > 0, "smoe scaling: --work-scale {}={}: the factor must be positive", stage, f);
  }
  if (!r.collectives.known() && study.contains("collectives")) {
    const json& c = study["collectives"];
    r.collectives.latency_s = c.value("latency_s", -1.0);
    r.collectives.seconds_per_byte = c.value("seconds_per_byte", -1.0);
    r.collectives.source = c.value("source", "");
  }
  const int P0 = ranks.front(), Pmax = ranks.back();
  std::set<std::string> fixed;  // stages whose work a weak study does not grow (the evaluation)
  for (const auto& st : study.value("fixed_work_stages", json::array())) fixed.insert(st.get<std::string>());
  std::vector<int> beyond;
  for (int P : predict_at)
    if (P > Pmax) beyond.push_back(P);
  const std::vector<StudyRun> runs = read_runs(out, ranks);
  for (const std::string& stage : stages) {
    std::vector<StageMeasure> measures;
    std::vector<json> comm;
    for (const StudyRun& run : runs) {
      measures.push_back(stage_measure(run.report, run.done, stage, run.dir));
      comm.push_back(run.report.contains("stage_comm") ? run.report["stage_comm"].value(stage, json::object())
                                                       : json::object());
    }
    // Each measured row's model uses only the smaller rank counts' runs (its
    // error is an out-of-sample check; the smallest's is its own); the
    // predictions beyond use every run.
    // A weak study grows the training set; the evaluation's test split stays.
    const bool grows = r.mode == ScalingMode::weak && !fixed.count(stage);
    const StageModel model = fit_stage(measures, r.collectives, grows);
    const double t0 = measures.front().seconds;
    auto row = [&](int P, bool measured, double seconds, double predicted) {
      ScalingRow row;
      row.stage = stage;
      row.ranks = P;
      row.measured = measured;
      row.seconds = seconds;
      const double ratio = seconds > 0 ? t0 / seconds : 0.0;
      row.weak = grows;
      if (grows) {
        row.efficiency = ratio;
        row.speedup = ratio * P / P0;
      } else {
        row.speedup = ratio;
        row.efficiency = ratio * P0 / P;
      }
      row.predicted = predicted;
      return row;
    };
    for (size_t i = 0; i < ranks.size(); ++i) {
      std::vector<StageMeasure> earlier(measures.begin(),
                                        measures.begin() + static_cast<std::ptrdiff_t>(std::max<size_t>(i, 1)));
      StageModel m = fit_stage(earlier, r.collectives, grows);
      m.calls = model.calls;  // the collectives as the largest run counted them
      m.calls_ranks = model.calls_ranks;
      ScalingRow x = row(ranks[i], true, measures[i].seconds, m.seconds(ranks[i]));
      x.sent_bytes = max_of(comm[i].value("sent_bytes", json()));
      x.recv_bytes = max_of(comm[i].value("recv_bytes", json()));
      x.comm_seconds = max_of(comm[i].value("seconds", json()));
      if (measures[i].kind == WorkKind::tasks && !measures[i].task_seconds.empty()) x.replayed = m.replay(measures[i]);
      r.rows.push_back(x);
    }
    // The predictions: for the measured work, or for the work given.
    StageModel scaled = model;
    scaled.work = work.count(stage) ? work.at(stage) : work.count("") ? work.at("") : 1.0;
    const double p0 = scaled.seconds(P0);
    std::vector<int> predicted = beyond;
    if (scaled.work != 1.0) predicted.insert(predicted.begin(), ranks.begin(), ranks.end());
    for (int P : predicted) {
      const double t = scaled.seconds(P);
      ScalingRow x = row(P, false, t, t);
      const double ratio = t > 0 ? p0 / t : 0.0;
      x.speedup = grows ? ratio * P / P0 : ratio;
      x.efficiency = grows ? ratio : ratio * P0 / P;
      r.rows.push_back(x);
    }
    std::vector<int> all = ranks;
    all.insert(all.end(), beyond.begin(), beyond.end());
    warn_packing(measures.front(), all, r);
  }
  // The same threads per rank at every P (else P ranks are not P times one).
  std::set<int64_t> threads;
  for (const StudyRun& run : runs)
    if (run.report.contains("runtime")) threads.insert(run.report["runtime"].value("threads_per_rank", int64_t{0}));
  if (threads.size() > 1)
    r.warnings.push_back(
        fmt::format("the runs used different threads per rank ({}): P ranks did not use P times "
                    "the cores of one; set runtime.threads",
                    fmt::join(threads, ", ")));
  else if (threads.size() == 1)
    r.checks.push_back(
        fmt::format("{} thread{} per rank at every P", *threads.begin(), *threads.begin() == 1 ? "" : "s"));
  if (r.mode == ScalingMode::strong && ranks.size() > 1)
    check_same_results(runs, ranks, r);
  else if (r.mode == ScalingMode::weak)
    r.checks.push_back(
        "weak study: each rank count trains on its own number of samples, so the runs' hashes differ "
        "by design (not compared)");
  return r;
}

std::string scaling_markdown(const ScalingResult& r) {
  std::string md;
  md += fmt::format("Scaling study ({}): speedup and efficiency against the smallest rank count measured; {}\n\n",
                    options::name(r.mode),
                    r.mode == ScalingMode::weak
                        ? "efficiency T(P0)/T(P), the work growing with P (the evaluation's test split does not: its "
                          "efficiency is T(P0) P0 / (T(P) P))"
                        : "efficiency T(P0) P0 / (T(P) P)");
  if (r.collectives.known())
    md += fmt::format(
        "Collective model: latency {:.1f} us, bandwidth {:.2f} GB/s ({}).\n\n", r.collectives.latency_s * 1e6,
        r.collectives.seconds_per_byte > 0 ? 1e-9 / r.collectives.seconds_per_byte : 0.0, r.collectives.source);
  for (const auto& [st, f] : r.work)
    md += fmt::format("The predictions (model rows) are for {:g} times the work measured{}.\n\n", f,
                      st.empty() ? "" : " in stage " + st);
  std::string stage;
  for (const ScalingRow& x : r.rows) {
    if (x.stage != stage) {
      stage = x.stage;
      md += fmt::format(
          "\n### {}\n\n| P | seconds | speedup | efficiency | sent MB | received MB | in collectives s | model s | "
          "model error |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
          stage);
    }
    if (x.measured)
      md += fmt::format("| {} | {:.2f} | {:.2f} | {:.3f} | {} | {} | {:.2f} | {:.2f} | {} |\n", x.ranks, x.seconds,
                        x.speedup, x.efficiency, mb(x.sent_bytes), mb(x.recv_bytes), x.comm_seconds, x.predicted,
                        percent_error(x.predicted, x.seconds));
    else
      md += fmt::format("| {} (model) | {:.2f} | {:.2f} | {:.3f} | | | | {:.2f} | |\n", x.ranks, x.seconds, x.speedup,
                        x.efficiency, x.predicted);
  }
  md += "\n";
  for (const ScalingRow& x : r.rows)
    if (x.replayed >= 0)
      md += fmt::format(
          "replay: {} at P={}: the scheduler simulated with this run's own task seconds gives {:.2f} s against "
          "{:.2f} s measured ({})\n",
          x.stage, x.ranks, x.replayed, x.seconds, percent_error(x.replayed, x.seconds));
  for (const auto& c : r.checks) md += "check: " + c + "\n";
  for (const auto& p : r.problems) md += "DIFFERENT: " + p + "\n";
  for (const auto& w : r.warnings) md += "warning: " + w + "\n";
  return md;
}

std::string scaling_csv(const ScalingResult& r) {
  std::string csv =
      "stage,ranks,source,seconds,speedup,efficiency,sent_bytes_max,recv_bytes_max,collective_seconds_max,"
      "model_seconds,replay_seconds\n";
  for (const ScalingRow& x : r.rows)
    csv += fmt::format("{},{},{},{:.6g},{:.6g},{:.6g},{:.0f},{:.0f},{:.6g},{:.6g},{}\n", x.stage, x.ranks,
                       x.measured ? "measured" : "predicted", x.seconds, x.speedup, x.efficiency, x.sent_bytes,
                       x.recv_bytes, x.comm_seconds, x.predicted,
                       x.replayed >= 0 ? fmt::format("{:.6g}", x.replayed) : std::string());
  return csv;
}

int write_scaling_study(const std::string& out, const CollectiveModel& collectives, const std::vector<int>& predict_at,
                        const WorkScale& work) {
  const ScalingResult r = scaling_result(out, collectives, predict_at, work);
  const std::string md = scaling_markdown(r);
  write_file_atomic((fs::path(out) / "scaling.md").string(), md);
  write_file_atomic((fs::path(out) / "scaling.csv").string(), scaling_csv(r));
  // One line per stage: measured points joined, the model's line beside.
  std::vector<eval::Series> time, efficiency;
  std::map<std::string, int> color;
  for (const ScalingRow& x : r.rows) {
    if (!color.count(x.stage)) {
      color[x.stage] = static_cast<int>(color.size()) + 1;
      for (auto* plot : {&time, &efficiency}) {
        plot->push_back({x.stage, {}, {}, true, color[x.stage], 17, {}});
        plot->push_back({x.stage + " (model)", {}, {}, true, color[x.stage], 2, {}});
      }
    }
    const double lx = std::log2(static_cast<double>(x.ranks));
    const size_t at = 2 * static_cast<size_t>(color[x.stage] - 1);
    if (x.measured) {
      time[at].x.push_back(lx);
      time[at].y.push_back(x.seconds);
      efficiency[at].x.push_back(lx);
      efficiency[at].y.push_back(x.efficiency);
    }
    const ScalingRow& base =
        *std::find_if(r.rows.begin(), r.rows.end(), [&](const ScalingRow& y) { return y.stage == x.stage; });
    time[at + 1].x.push_back(lx);
    time[at + 1].y.push_back(x.predicted);
    efficiency[at + 1].x.push_back(lx);
    const double ratio = x.predicted > 0 ? base.seconds / x.predicted : 0.0;
    efficiency[at + 1].y.push_back(x.weak ? ratio : ratio * base.ranks / x.ranks);
  }
  const std::string title = fmt::format("smoe scaling ({})", options::name(r.mode));
  eval::plot_series((fs::path(out) / "scaling_time.png").string(), title, "log2 ranks", "seconds", time);
  eval::plot_series((fs::path(out) / "scaling_efficiency.png").string(), title, "log2 ranks", "efficiency", efficiency);
  std::cout << md << fmt::format("wrote {}/scaling.md, scaling.csv, scaling_time.png, scaling_efficiency.png\n", out);
  if (!r.problems.empty()) {
    std::cerr << fmt::format(
        "smoe scaling: error: the strong study's runs computed different results ({} differences, the first: {}); "
        "rank-count invariance is broken\n",
        r.problems.size(), r.problems.front());
    return 1;
  }
  return 0;
}

}  // namespace smoe::pipeline
