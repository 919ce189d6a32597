#include "eval/report.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.h"
#include "eval/plots.h"

using nlohmann::json;

namespace smoe::eval {
namespace {

json point_json(const Point& p) { return {{"accuracy", p.accuracy}, {"macs", p.macs}}; }

json anytime_json(const Point& p) {
  return {{"tau", p.tau},
          {"accuracy", p.accuracy},
          {"macs", p.macs},
          {"early_exit_rate", p.early_exit_rate},
          {"mean_experts_per_sample", p.mean_experts}};
}

Point to_point(const json& j) {
  Point p;
  p.accuracy = j["accuracy"];
  p.macs = j["macs"];
  return p;
}

// The anytime curve in a few numbers: its best point; the cheapest point
// that matches the base model's accuracy while still running experts; the
// best accuracy within 1.2x the base model's MACs.
json anytime_summary(const std::vector<Point>& curve, const Point& base) {
  json summary = {{"best_accuracy", 0.0},
                  {"best_tau", nullptr},
                  {"tau_at_base_accuracy", nullptr},
                  {"macs_at_base_accuracy", nullptr},
                  {"macs_ratio_at_base_accuracy", nullptr},
                  {"best_accuracy_within_1.2x_base_macs", base.accuracy}};
  for (const auto& p : curve) {
    if (p.accuracy > summary["best_accuracy"].get<double>()) {
      summary["best_accuracy"] = p.accuracy;
      summary["best_tau"] = p.tau;
    }
    if (p.accuracy >= base.accuracy && p.early_exit_rate < 1.0 &&
        (summary["macs_at_base_accuracy"].is_null() || p.macs < summary["macs_at_base_accuracy"].get<double>())) {
      summary["macs_at_base_accuracy"] = p.macs;
      summary["macs_ratio_at_base_accuracy"] = p.macs / base.macs;
      summary["tau_at_base_accuracy"] = p.tau;
    }
    if (p.macs <= 1.2 * base.macs)
      summary["best_accuracy_within_1.2x_base_macs"] =
          std::max(summary["best_accuracy_within_1.2x_base_macs"].get<double>(), p.accuracy);
  }
  return summary;
}

// mAP and balanced accuracy beside a rule's accuracy (null when undefined).
void add_class_metrics(json& point, const ClassCount& count) {
  const ClassMetrics m = class_metrics(count);
  auto number = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  point["map"] = number(m.map);
  point["balanced_accuracy"] = number(m.balanced_accuracy);
}

}  // namespace

Tally::Tally(int64_t experts, std::vector<std::string> ensemblers, const ReportOptions& o)
    : options_(o), experts_(experts) {
  SMOE_ASSERT(std::find(ensemblers.begin(), ensemblers.end(), o.ensembler) != ensemblers.end(),
              "no outputs of ensembler '{}'", o.ensembler);
  const RuleCount zero{0, 0, 0, std::vector<int64_t>(static_cast<size_t>(experts), 0), 0};
  base_ = zero;
  using Kind = MoeRule::Kind;
  moe_.push_back({"no_ensembling", Kind::top1, zero, {}});
  for (const auto& name : ensemblers) moe_.push_back({name, Kind::top1_ensembled, zero, {}});
  moe_.push_back({"top2", Kind::top2, zero, {}});
  if (o.class_oracle) oracle_ = moe_;
  anytime_.assign(o.taus.size(), zero);
  spec_.usage.assign(static_cast<size_t>(experts), 0);
  spec_.routing.assign(static_cast<size_t>(experts * o.num_classes), 0);
  base_classes_ = ClassCount::zeros(o.num_classes);
  for (auto& rule : moe_) rule.classes = base_classes_;
}

void Tally::add(const TestOutputs& t) {
  at::Tensor base_probs = torch::softmax(t.base_logits, 1);
  at::Tensor expert_probs = torch::softmax(t.expert_logits, 2);
  base_.add(count_base(base_probs, t.labels, experts_));
  auto rules = [&](const at::Tensor& gate, Rules& into) {
    for (MoeRule& rule : into) {
      switch (rule.kind) {
        case MoeRule::Kind::top1:
          rule.count.add(count_top1(gate, expert_probs, t.labels, false));
          break;
        case MoeRule::Kind::top1_ensembled:
          rule.count.add(count_top1(gate, t.ensembled.at(rule.name), t.labels, true));
          break;
        case MoeRule::Kind::top2:
          rule.count.add(count_top2(gate, expert_probs, t.labels));
          break;
      }
    }
  };
  rules(t.gate, moe_);
  if (options_.class_oracle) {
    SMOE_ASSERT(t.oracle_gate.defined(), "test outputs without the class oracle's gate");
    rules(t.oracle_gate, oracle_);
  }
  const at::Tensor& ensembled = t.ensembled.at(options_.ensembler);  // e'_k of the anytime model
  for (size_t i = 0; i < options_.taus.size(); ++i)
    anytime_[i].add(count_anytime(base_probs, t.gate, ensembled, t.labels, options_.taus[i]));
  spec_.add(count_specialisation(t.gate, t.labels, options_.num_classes));
  base_classes_.add(count_classes(base_probs, t.labels, base_classes_.bins));
  for (MoeRule& rule : moe_) {
    at::Tensor probs = rule.kind == MoeRule::Kind::top1   ? top1_probs(t.gate, expert_probs)
                       : rule.kind == MoeRule::Kind::top2 ? top2_probs(t.gate, expert_probs)
                                                          : top1_probs(t.gate, t.ensembled.at(rule.name));
    rule.classes.add(count_classes(probs, t.labels, rule.classes.bins));
  }
}

void Tally::each_field(const std::function<void(int64_t&)>& f) {
  auto rule = [&](RuleCount& r) {
    f(r.samples);
    f(r.correct);
    f(r.early_exits);
    f(r.ensembler_runs);
    for (auto& v : r.runs) f(v);
  };
  rule(base_);
  for (auto& m : moe_) rule(m.count);
  for (auto& m : oracle_) rule(m.count);
  for (auto& r : anytime_) rule(r);
  f(spec_.samples);
  f(spec_.entropy);
  for (auto& v : spec_.usage) f(v);
  for (auto& v : spec_.routing) f(v);
  base_classes_.each(f);
  for (auto& m : moe_) m.classes.each(f);
}

Report build_report(const Tally& tally, Costs costs) {
  const ReportOptions& o = tally.options();
  costs.ensembler = o.ensembler_macs.at(o.ensembler);
  const int64_t K = static_cast<int64_t>(costs.experts.size()), C = o.num_classes;

  // Top-1 without ensembling, with each ensembler (Table 6), and top-2; in
  // this order for the envelope.
  auto moe_block = [&](const Tally::Rules& rules, std::vector<Point>* keep) {
    json block = json::object();
    for (const MoeRule& rule : rules) {
      const double ens = rule.kind == MoeRule::Kind::top1_ensembled ? o.ensembler_macs.at(rule.name) : 0.0;
      Point p = point_of(rule.count, costs, ens);
      block[rule.name] = point_json(p);
      if (&rules == &tally.moe()) add_class_metrics(block[rule.name], rule.classes);
      if (keep) keep->push_back(p);
    }
    return block;
  };
  Point base_pt = point_of(tally.base(), costs, 0.0, true);
  Report r;
  json& report = r.json;
  report["base"] = point_json(base_pt);
  add_class_metrics(report["base"], tally.base_classes());
  std::vector<Point> moe_points;
  report["moe"] = moe_block(tally.moe(), &moe_points);
  if (o.class_oracle) report["class_oracle"] = moe_block(tally.oracle(), nullptr);

  std::vector<Point> points = {base_pt};
  std::ostringstream csv;
  csv << "tau,accuracy,macs,early_exit_rate,mean_experts_per_sample\n";
  json anytime = json::array();
  std::vector<Point> curve;
  for (size_t i = 0; i < o.taus.size(); ++i) {
    Point p = point_of(tally.anytime()[i], costs, costs.ensembler);
    p.tau = o.taus[i];
    curve.push_back(p);
    anytime.push_back(anytime_json(p));
    csv << fmt::format("{},{:.6f},{:.1f},{:.6f},{:.6f}\n", p.tau, p.accuracy, p.macs, p.early_exit_rate,
                       p.mean_experts);
  }
  report["anytime"] = anytime;
  points.insert(points.end(), moe_points.begin(), moe_points.end());
  points.insert(points.end(), curve.begin(), curve.end());
  json envelope = json::array();
  for (size_t i : convex_envelope(points)) envelope.push_back(point_json(points[i]));
  report["envelope"] = envelope;

  report.update(specialisation_json(tally.specialisation(), K, C));
  report["anytime_summary"] = anytime_summary(curve, base_pt);
  r.anytime_csv = csv.str();
  return r;
}

Report build_report(const TestOutputs& t, Costs costs, const ReportOptions& options) {
  std::vector<std::string> names;
  for (const auto& [name, probs] : t.ensembled) names.push_back(name);
  Tally tally(t.gate.size(1), names, options);
  tally.add(t);
  return build_report(tally, std::move(costs));
}

json specialisation_json(const SpecialisationCount& count, int64_t K, int64_t C) {
  const auto spec = specialisation_of(count, C);
  json out;
  out["specialisation"] = {{"gate_entropy", spec.gate_entropy},
                           {"usage_entropy", spec.usage_entropy},
                           {"mutual_information", spec.mutual_information},
                           {"unit", "bits"}};
  std::vector<std::vector<int64_t>> routing(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c)
      routing[static_cast<size_t>(k)].push_back(count.routing[static_cast<size_t>(k * C + c)]);
  out["routing"] = routing;
  return out;
}

void write_routing_plot(const std::string& routing_png, const json& report,
                        const std::vector<std::string>& class_names) {
  const auto routing = report["routing"].get<std::vector<std::vector<int64_t>>>();
  std::vector<std::string> rows, cols;
  for (size_t k = 0; k < routing.size(); ++k) rows.push_back(fmt::format("expert {}", k));
  for (const auto& n : class_names) cols.push_back(n.size() > 10 ? n.substr(0, 9) + "." : n);
  plot_heatmap(routing_png, "test samples routed to each expert (top-1 gate) by class", routing, rows, cols);
}

void write_report_plots(const std::string& accuracy_png, const std::string& routing_png, const json& report,
                        const std::string& dataset, const std::vector<std::string>& class_names) {
  // Accuracy (%) against MMACs, and the routing table.
  auto series_of = [](const std::string& label, const std::vector<Point>& ps, bool line, int color, int marker) {
    Series s{label, {}, {}, line, color, marker, {}};
    for (const auto& p : ps) {
      s.x.push_back(p.macs / 1e6);
      s.y.push_back(100 * p.accuracy);
    }
    return s;
  };
  Point base_pt = to_point(report["base"]);
  std::vector<Point> curve, moe_pts, env;
  for (const auto& j : report["anytime"]) curve.push_back(to_point(j));
  for (const auto& [name, j] : report["moe"].items()) moe_pts.push_back(to_point(j));
  for (const auto& j : report["envelope"]) env.push_back(to_point(j));
  plot_series(accuracy_png, dataset + ": accuracy vs MACs", "MMACs per image", "test accuracy (%)",
              {series_of("anytime (tau grid)", curve, true, 9, 2), series_of("convex envelope", env, true, 3, 4),
               series_of("MoE top-1 / bagging / stacking / top-2", moe_pts, false, 1, 5),
               series_of("base model", {base_pt}, false, 13, 17)});
  write_routing_plot(routing_png, report, class_names);
}

}  // namespace smoe::eval
