#include "eval/report.h"

#include <torch/torch.h>

#include <sstream>

#include "core/error.h"
#include "eval/plots.h"
#include "eval/specialisation.h"

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

}  // namespace

Report build_report(const TestOutputs& t, Costs costs, const ReportOptions& o) {
  SMOE_ASSERT(t.ensembled.count(o.ensembler), "no outputs of ensembler '{}'", o.ensembler);
  costs.ensembler = o.ensembler_macs.at(o.ensembler);
  const int64_t K = t.gate.size(1), C = o.num_classes;
  at::Tensor base_probs = torch::softmax(t.base_logits, 1);
  at::Tensor expert_probs = torch::softmax(t.expert_logits, 2);
  const at::Tensor& ensembled = t.ensembled.at(o.ensembler);  // e'_k of the anytime model

  // Top-1 without ensembling, with each ensembler (Table 6), and top-2; in
  // this order for the envelope.
  std::vector<std::pair<std::string, Point>> moe_points;
  auto moe_block = [&](const at::Tensor& gate_probs, std::vector<std::pair<std::string, Point>>* keep) {
    std::vector<std::pair<std::string, Point>> pts;
    pts.emplace_back("no_ensembling", top1_point(gate_probs, expert_probs, t.labels, costs, 0.0));
    for (const auto& [name, probs] : t.ensembled)
      pts.emplace_back(name, top1_point(gate_probs, probs, t.labels, costs, o.ensembler_macs.at(name)));
    pts.emplace_back("top2", top2_point(gate_probs, expert_probs, t.labels, costs));
    json block = json::object();
    for (const auto& [name, p] : pts) block[name] = point_json(p);
    if (keep) *keep = pts;
    return block;
  };
  Point base_pt = base_point(base_probs, t.labels, costs);
  Report r;
  json& report = r.json;
  report["base"] = point_json(base_pt);
  report["moe"] = moe_block(t.gate, &moe_points);
  if (o.oracle_gate.defined()) report["class_oracle"] = moe_block(o.oracle_gate, nullptr);

  std::vector<Point> points = {base_pt};
  std::ostringstream csv;
  csv << "tau,accuracy,macs,early_exit_rate,mean_experts_per_sample\n";
  json anytime = json::array();
  std::vector<Point> curve;
  for (double tau : o.taus) {
    Point p = anytime_point(base_probs, t.gate, ensembled, t.labels, tau, costs);
    curve.push_back(p);
    anytime.push_back(anytime_json(p));
    csv << fmt::format("{},{:.6f},{:.1f},{:.6f},{:.6f}\n", tau, p.accuracy, p.macs, p.early_exit_rate, p.mean_experts);
  }
  report["anytime"] = anytime;
  for (const auto& [name, p] : moe_points) points.push_back(p);
  points.insert(points.end(), curve.begin(), curve.end());
  json envelope = json::array();
  for (size_t i : convex_envelope(points)) envelope.push_back(point_json(points[i]));
  report["envelope"] = envelope;

  auto spec = specialisation(t.gate, t.labels, C);
  report["specialisation"] = {{"gate_entropy", spec.gate_entropy},
                              {"usage_entropy", spec.usage_entropy},
                              {"mutual_information", spec.mutual_information},
                              {"unit", "bits"}};
  at::Tensor table = routing_table(t.gate.argmax(1), t.labels, K, C);
  std::vector<std::vector<int64_t>> routing(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) routing[static_cast<size_t>(k)].push_back(table[k][c].item<int64_t>());
  report["routing"] = routing;
  report["anytime_summary"] = anytime_summary(curve, base_pt);
  r.anytime_csv = csv.str();
  return r;
}

void write_report_plots(const std::string& accuracy_png, const std::string& routing_png, const json& report,
                        const std::string& dataset, const std::vector<std::string>& class_names) {
  // Accuracy (%) against MMACs, and the routing table.
  auto series_of = [](const std::string& label, const std::vector<Point>& ps, bool line, int color, int marker) {
    Series s{label, {}, {}, line, color, marker};
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
  const auto routing = report["routing"].get<std::vector<std::vector<int64_t>>>();
  plot_series(accuracy_png, dataset + ": accuracy vs MACs", "MMACs per image", "test accuracy (%)",
              {series_of("anytime (tau grid)", curve, true, 9, 2), series_of("convex envelope", env, true, 3, 4),
               series_of("MoE top-1 / bagging / stacking / top-2", moe_pts, false, 1, 5),
               series_of("base model", {base_pt}, false, 13, 17)});
  std::vector<std::string> rows, cols;
  for (size_t k = 0; k < routing.size(); ++k) rows.push_back(fmt::format("expert {}", k));
  for (const auto& n : class_names) cols.push_back(n.size() > 10 ? n.substr(0, 9) + "." : n);
  plot_heatmap(routing_png, "test samples routed to each expert (top-1 gate) by class", routing, rows, cols);
}

}  // namespace smoe::eval
