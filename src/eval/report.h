// The evaluation report from the test split's per-sample outputs, computed
// once by the MoE model (models/moe.h): every inference rule of Royer et al.
// (base, top-1 per ensembler, top-2, the anytime grid of tau and its convex
// envelope), the specialisation metrics of Krishnamurthy et al. and the
// routing table; then its plots. Knows nothing of ranks or run folders.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/anytime.h"

namespace smoe::eval {

struct TestOutputs {
  at::Tensor labels;                            // int64 [N]
  at::Tensor base_logits;                       // [N, C]
  at::Tensor gate;                              // [N, K] g(k|x)
  at::Tensor expert_logits;                     // [N, K, C]
  std::map<std::string, at::Tensor> ensembled;  // ensembler name -> e'_k(.|x) [N, K, C]
};

struct ReportOptions {
  std::vector<double> taus;                      // the anytime grid
  std::string ensembler;                         // the rule the anytime model uses
  std::map<std::string, double> ensembler_macs;  // per ensembler name
  at::Tensor oracle_gate;                        // optional [N, K]: routing by the true class
  int64_t num_classes = 0;
};

struct Report {
  nlohmann::json json;      // base, moe, class_oracle, anytime, envelope, specialisation, routing, anytime_summary
  std::string anytime_csv;  // tau,accuracy,macs,early_exit_rate,mean_experts_per_sample
};

// costs.ensembler is set from options (the anytime model's rule).
Report build_report(const TestOutputs& t, Costs costs, const ReportOptions& options);

// accuracy_vs_macs.png and routing.png from a report built above.
void write_report_plots(const std::string& accuracy_png, const std::string& routing_png, const nlohmann::json& report,
                        const std::string& dataset, const std::vector<std::string>& class_names);

}  // namespace smoe::eval
