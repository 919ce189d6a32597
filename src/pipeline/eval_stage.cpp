// The eval stage: one pass over the test split computes, for every sample,
// the base model's logits, the gate and every expert's raw and stacked
// logits; every inference rule of the report (base, MoE variants, the
// anytime grid of tau, specialisation metrics) then comes from those tensors
// on rank 0.
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "cluster/gate_init.h"
#include "cluster/metrics.h"
#include "comm/tensor_collectives.h"
#include "core/atomic_file.h"
#include "core/log.h"
#include "core/progress.h"
#include "data/batch.h"
#include "data/sampler.h"
#include "eval/anytime.h"
#include "eval/plots.h"
#include "pipeline/pipeline.h"
#include "train/checkpoint.h"
#include "train/inference.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

json point_json(const eval::Point& p) { return {{"accuracy", p.accuracy}, {"macs", p.macs}}; }

json anytime_json(const eval::Point& p) {
  return {{"tau", p.tau},
          {"accuracy", p.accuracy},
          {"macs", p.macs},
          {"early_exit_rate", p.early_exit_rate},
          {"mean_experts_per_sample", p.mean_experts}};
}

struct TestOutputs {
  at::Tensor labels;           // [N]
  at::Tensor base_logits;      // [N, C]
  at::Tensor gate;             // [N, K] probabilities
  at::Tensor expert_logits;    // [N, K, C]
  at::Tensor stacking_logits;  // [N, K, C]
};

}  // namespace

json Pipeline::evaluate_test(int64_t round) {
  const int64_t K = cfg_.experts.count, C = test_->num_classes(), b = cfg_.experts.branch_after;
  const bool per_class = cfg_.cluster.method == "per_class";
  torch::NoGradGuard no_grad;
  base_->eval();

  // The gate, the experts and their ensemblers, on every rank.
  models::Gate gate(network_spec().prelogit_dim(), K);
  at::Tensor class_to_expert;
  if (per_class) {
    if (comm_.is_root()) class_to_expert = train::load_state(run_.file("cluster.pt")).at("class_to_expert");
    class_to_expert = comm::broadcast_tensor(comm_, class_to_expert, 0).to(rt_.device);
  } else {
    train::load_module(*gate, gate_path(round));
  }
  gate->to(rt_.device);
  std::vector<models::Backbone> experts;
  std::vector<models::Stacking> stackings;
  for (int64_t k = 0; k < K; ++k) {
    experts.emplace_back(network_spec(), b);
    train::load_module(*experts.back(), expert_path(k, round));
    experts.back()->to(rt_.device);
    experts.back()->eval();
    stackings.emplace_back(C);
    train::load_module(*stackings.back(), stacking_path(k, round));
    stackings.back()->to(rt_.device);
  }

  // Fixed batches of consecutive test ids, shared round-robin.
  std::vector<int64_t> all_ids(static_cast<size_t>(test_->size()));
  std::iota(all_ids.begin(), all_ids.end(), 0);
  auto batches = data::make_batches(all_ids, cfg_.eval.batch_size, false);
  std::vector<at::Tensor> ids, base_l, gate_p, exp_l, stack_l;
  for (int64_t i : data::round_robin(static_cast<int64_t>(batches.size()), comm_.rank(), comm_.size())) {
    data::Batch x = data::make_batch(*test_, batches[static_cast<size_t>(i)], data::Transform{});
    at::Tensor trunk = base_->blocks(x.images.to(rt_.device), 0, b);
    at::Tensor pre = base_->prelogits(base_->blocks(trunk, b, models::NetworkSpec::kBlocks));
    at::Tensor logits = base_->classify(pre);
    at::Tensor g = per_class ? cluster::class_routing(torch::softmax(logits, 1), class_to_expert, K)
                             : torch::softmax(gate->forward(gate_inputs(pre)), 1);
    std::vector<at::Tensor> el, sl;
    for (int64_t k = 0; k < K; ++k) {
      el.push_back(experts[k]->forward(trunk));
      sl.push_back(stackings[k]->forward(logits, el.back()));
    }
    ids.push_back(x.ids);
    base_l.push_back(logits.cpu());
    gate_p.push_back(g.cpu());
    exp_l.push_back(torch::stack(el, 1).cpu());
    stack_l.push_back(torch::stack(sl, 1).cpu());
  }
  auto gather = [&](std::vector<at::Tensor>& parts, std::vector<int64_t> empty_shape, at::ScalarType t) {
    at::Tensor local = parts.empty() ? torch::empty(empty_shape, t) : torch::cat(parts);
    return comm::gather_rows(comm_, local, 0);
  };
  at::Tensor gid = gather(ids, {0}, torch::kLong);
  at::Tensor g_base = gather(base_l, {0, C}, torch::kFloat);
  at::Tensor g_gate = gather(gate_p, {0, K}, torch::kFloat);
  at::Tensor g_exp = gather(exp_l, {0, K, C}, torch::kFloat);
  at::Tensor g_stack = gather(stack_l, {0, K, C}, torch::kFloat);
  if (!comm_.is_root()) return json();
  TestOutputs t;
  t.labels = torch::tensor(test_->labels(), torch::kLong);
  t.base_logits = train::reorder_by_id(g_base, gid);
  t.gate = train::reorder_by_id(g_gate, gid);
  t.expert_logits = train::reorder_by_id(g_exp, gid);
  t.stacking_logits = train::reorder_by_id(g_stack, gid);

  // Costs (MACs per image, counted analytically per layer).
  eval::Costs costs;
  costs.base = static_cast<double>(base_->macs(0, models::NetworkSpec::kBlocks) + base_->head_macs());
  costs.gate = per_class ? static_cast<double>(C * K) : static_cast<double>(gate->macs());
  costs.experts.assign(static_cast<size_t>(K),
                       static_cast<double>(base_->macs(b, models::NetworkSpec::kBlocks) + base_->head_macs()));
  const double stacking_macs = static_cast<double>(stackings[0]->macs());
  const bool stacking_kind = cfg_.ensembler.kind == "stacking";
  costs.ensembler = stacking_kind ? stacking_macs : 0.0;

  at::Tensor base_probs = torch::softmax(t.base_logits, 1);
  at::Tensor expert_probs = torch::softmax(t.expert_logits, 2);
  at::Tensor bagging = 0.5 * (base_probs.unsqueeze(1) + expert_probs);
  at::Tensor stacking = torch::softmax(t.stacking_logits, 2);
  at::Tensor ensembled = stacking_kind ? stacking : bagging;  // e'_k of the anytime model

  auto moe_block = [&](const at::Tensor& gate_probs) {
    return json{{"no_ensembling", point_json(eval::top1_point(gate_probs, expert_probs, t.labels, costs, 0.0))},
                {"bagging", point_json(eval::top1_point(gate_probs, bagging, t.labels, costs, 0.0))},
                {"stacking", point_json(eval::top1_point(gate_probs, stacking, t.labels, costs, stacking_macs))},
                {"top2", point_json(eval::top2_point(gate_probs, expert_probs, t.labels, costs))}};
  };
  eval::Point base_pt = eval::base_point(base_probs, t.labels, costs);
  json report;
  report["dataset"] = test_->manifest().name;
  report["num_experts"] = K;
  report["ranks"] = comm_.size();
  report["test_samples"] = test_->size();
  report["train_samples"] = train_->size();
  report["base"] = point_json(base_pt);
  report["moe"] = moe_block(t.gate);
  report["ensembler"] = cfg_.ensembler.kind;
  if (per_class && cfg_.eval.class_oracle)
    report["class_oracle"] = moe_block(cluster::class_assignment(t.labels, class_to_expert.cpu(), K));

  std::vector<eval::Point> points = {base_pt};
  std::ostringstream csv;
  csv << "tau,accuracy,macs,early_exit_rate,mean_experts_per_sample\n";
  json anytime = json::array();
  std::vector<eval::Point> curve;
  for (double tau : cfg_.eval.taus) {
    eval::Point p = eval::anytime_point(base_probs, t.gate, ensembled, t.labels, tau, costs);
    curve.push_back(p);
    anytime.push_back(anytime_json(p));
    csv << fmt::format("{},{:.6f},{:.1f},{:.6f},{:.6f}\n", tau, p.accuracy, p.macs, p.early_exit_rate, p.mean_experts);
  }
  report["anytime"] = anytime;
  for (const char* v : {"no_ensembling", "bagging", "stacking", "top2"}) {
    eval::Point p;
    p.accuracy = report["moe"][v]["accuracy"];
    p.macs = report["moe"][v]["macs"];
    points.push_back(p);
  }
  points.insert(points.end(), curve.begin(), curve.end());
  json envelope = json::array();
  for (size_t i : eval::convex_envelope(points)) envelope.push_back(point_json(points[i]));
  report["envelope"] = envelope;

  auto spec = cluster::specialisation(t.gate, t.labels, C);
  report["specialisation"] = {{"gate_entropy", spec.gate_entropy},
                              {"usage_entropy", spec.usage_entropy},
                              {"mutual_information", spec.mutual_information},
                              {"unit", "bits"}};
  at::Tensor table = cluster::routing_table(t.gate.argmax(1), t.labels, K, C);
  std::vector<std::vector<int64_t>> routing(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) routing[static_cast<size_t>(k)].push_back(table[k][c].item<int64_t>());
  report["routing"] = routing;

  // The anytime curve in a few numbers: its best point; the cheapest point
  // that matches the base model's accuracy while still running experts; the
  // best accuracy within 1.2x the base model's MACs.
  json summary = {{"best_accuracy", 0.0},
                  {"best_tau", nullptr},
                  {"tau_at_base_accuracy", nullptr},
                  {"macs_at_base_accuracy", nullptr},
                  {"macs_ratio_at_base_accuracy", nullptr},
                  {"best_accuracy_within_1.2x_base_macs", base_pt.accuracy}};
  for (const auto& p : curve) {
    if (p.accuracy > summary["best_accuracy"].get<double>()) {
      summary["best_accuracy"] = p.accuracy;
      summary["best_tau"] = p.tau;
    }
    if (p.accuracy >= base_pt.accuracy && p.early_exit_rate < 1.0 &&
        (summary["macs_at_base_accuracy"].is_null() || p.macs < summary["macs_at_base_accuracy"].get<double>())) {
      summary["macs_at_base_accuracy"] = p.macs;
      summary["macs_ratio_at_base_accuracy"] = p.macs / base_pt.macs;
      summary["tau_at_base_accuracy"] = p.tau;
    }
    if (p.macs <= 1.2 * base_pt.macs)
      summary["best_accuracy_within_1.2x_base_macs"] =
          std::max(summary["best_accuracy_within_1.2x_base_macs"].get<double>(), p.accuracy);
  }
  report["anytime_summary"] = summary;
  report["anytime_csv"] = csv.str();
  return report;
}

void Pipeline::stage_eval() {
  Progress clock("eval", 1, 1);
  log::info("eval      starting on {} test samples (model of EM round {})", test_->size(), final_round());
  json report = evaluate_test(final_round());
  // Each rank's device, for the report.
  std::vector<std::string> devices = comm_.allgather_bytes(rt_.device_name());
  if (!comm_.is_root()) {
    comm_.barrier();
    return;
  }
  const int64_t K = cfg_.experts.count;
  const std::string csv = report["anytime_csv"];
  report.erase("anytime_csv");
  json experts_json = json::array();
  for (int64_t k = 0; k < K; ++k) {
    json r = run_.record(expert_task_key(k, 0));
    experts_json.push_back({{"id", k},
                            {"gate_mass", r["gate_mass"]},
                            {"train_samples_effective", r["train_samples_effective"]},
                            {"seconds", r["seconds"]},
                            {"rank", r["rank"]},
                            {"checkpoint_sha256", r["checkpoint_sha256"]},
                            {"stacking_sha256", r["stacking_sha256"]}});
  }
  report["experts"] = experts_json;
  json stages = json::object();
  for (const auto& s : stage_names())
    if (run_.done(s)) stages[s] = run_.record(s).value("seconds", 0.0);
  stages["eval"] = clock.seconds();
  report["stages"] = stages;
  if (run_.done("experts")) {
    // Without the cache every expert epoch (and its logits pass) would run
    // the trunk on every sample it sees.
    const json& er = run_.record("experts");
    const double cache_s = er.value("trunk_cache_seconds", 0.0);
    double seen = 0;
    for (int64_t r = 0; r <= final_round(); ++r)
      for (int64_t k = 0; k < K; ++k) seen += run_.record(expert_task_key(k, r)).value("samples_seen", 0.0);
    const double passes = seen / static_cast<double>(train_->size()) + static_cast<double>(K * (1 + 2 * final_round()));
    // One cached pass took cache_s with the ranks sharing the work; a rank
    // without the cache pays a whole pass (about P x cache_s) per pass.
    const double ranks = static_cast<double>(comm_.size());
    report["trunk_cache"] = {
        {"enabled", cfg_.experts.cache_trunk && !cfg_.experts.augment},
        {"seconds_spent", cache_s},
        {"trunk_passes_avoided", passes},
        {"estimated_rank_seconds_saved", std::max(0.0, ranks * cache_s * passes - ranks * cache_s)}};
  }
  report["runtime"] = {{"threads_per_rank", rt_.threads}, {"device", rt_.device_name()}, {"devices", devices}};
  json em = json::array();
  for (int64_t r = 1; r <= final_round(); ++r) em.push_back(run_.record(fmt::format("em/{}", r)));
  report["em_steps"] = final_round();
  if (final_round() > 0) report["em"] = em;

  write_file_atomic(run_.file("report.json"), report.dump(2) + "\n");
  write_file_atomic(run_.file("anytime.csv"), csv);

  // Plots: accuracy (%) against MMACs, and the routing table.
  auto series_of = [](const std::string& label, const std::vector<eval::Point>& ps, bool line, int color, int marker) {
    eval::Series s{label, {}, {}, line, color, marker};
    for (const auto& p : ps) {
      s.x.push_back(p.macs / 1e6);
      s.y.push_back(100 * p.accuracy);
    }
    return s;
  };
  auto to_point = [](const json& j) {
    eval::Point p;
    p.accuracy = j["accuracy"];
    p.macs = j["macs"];
    return p;
  };
  eval::Point base_pt = to_point(report["base"]);
  std::vector<eval::Point> curve, moe_pts, env;
  for (const auto& j : report["anytime"]) curve.push_back(to_point(j));
  for (const auto& [name, j] : report["moe"].items()) moe_pts.push_back(to_point(j));
  for (const auto& j : report["envelope"]) env.push_back(to_point(j));
  const auto routing = report["routing"].get<std::vector<std::vector<int64_t>>>();
  eval::plot_series(run_.file("accuracy_vs_macs.png"), test_->manifest().name + ": accuracy vs MACs", "MMACs per image",
                    "test accuracy (%)",
                    {series_of("anytime (tau grid)", curve, true, 9, 2), series_of("convex envelope", env, true, 3, 4),
                     series_of("MoE top-1 / bagging / stacking / top-2", moe_pts, false, 1, 5),
                     series_of("base model", {base_pt}, false, 13, 17)});
  std::vector<std::string> rows, cols;
  for (int64_t k = 0; k < K; ++k) rows.push_back(fmt::format("expert {}", k));
  for (const auto& n : test_->manifest().class_names) cols.push_back(n.size() > 10 ? n.substr(0, 9) + "." : n);
  eval::plot_heatmap(run_.file("routing.png"), "test samples routed to each expert (top-1 gate) by class", routing,
                     rows, cols);

  log::info(
      "eval      base {:.2f}% at {:.2f} MMACs | MoE top-1 {:.2f}%, bagging {:.2f}%, stacking {:.2f}%, top-2 {:.2f}%",
      100 * base_pt.accuracy, base_pt.macs / 1e6, 100 * report["moe"]["no_ensembling"]["accuracy"].get<double>(),
      100 * report["moe"]["bagging"]["accuracy"].get<double>(),
      100 * report["moe"]["stacking"]["accuracy"].get<double>(), 100 * report["moe"]["top2"]["accuracy"].get<double>());
  log::info("eval      report: {}", run_.file("report.json"));
  comm_.barrier();
}

}  // namespace smoe::pipeline
