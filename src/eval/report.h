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
#include "eval/class_metrics.h"
#include "eval/packed_counts.h"
#include "eval/specialisation.h"

namespace smoe::eval {

// The model's outputs on some test samples (a batch, or the whole split).
struct TestOutputs {
  at::Tensor labels;                            // int64 [n]
  at::Tensor base_logits;                       // [n, C]
  at::Tensor gate;                              // [n, K] g(k|x)
  at::Tensor expert_logits;                     // [n, K, C]
  std::map<std::string, at::Tensor> ensembled;  // ensembler name -> e'_k(.|x) [n, K, C]
  at::Tensor oracle_gate;                       // optional [n, K]: routing by the true class
};

struct ReportOptions {
  std::vector<double> taus;                      // the anytime grid
  std::string ensembler;                         // the rule the anytime model uses
  std::map<std::string, double> ensembler_macs;  // per ensembler name
  bool class_oracle = false;                     // outputs carry oracle_gate
  int64_t num_classes = 0;
};

// One inference rule of the report's "moe" (and "class_oracle") block:
// top-1 on the experts alone (no_ensembling), top-1 through an ensembler
// (named after it), or top-2.
struct MoeRule {
  enum class Kind { top1, top1_ensembled, top2 };
  std::string name;  // its key in the report
  Kind kind = Kind::top1;
  RuleCount count;
  ClassCount classes;  // mAP and balanced accuracy ("moe" only; empty in "class_oracle")
};

// Everything the report needs from the test split, as integer counts added
// batch by batch and then summed over ranks (pack, allreduce, unpack): no
// rank holds a per-sample tensor of the whole split, and the sums, being
// integers, do not depend on how the samples were split among ranks.
class Tally : public PackedCounts {
 public:
  // `ensemblers`: the names of TestOutputs::ensembled, in map order.
  Tally(int64_t experts, std::vector<std::string> ensemblers, const ReportOptions& options);
  void add(const TestOutputs& batch);
  int64_t samples() const { return base_.samples; }

  using Rules = std::vector<MoeRule>;  // no_ensembling, each ensembler, top2
  const RuleCount& base() const { return base_; }
  const Rules& moe() const { return moe_; }
  const Rules& oracle() const { return oracle_; }
  const std::vector<RuleCount>& anytime() const { return anytime_; }  // one per tau
  const SpecialisationCount& specialisation() const { return spec_; }
  // Per-class counts (mAP, balanced accuracy) of the base model (each MoE rule's: MoeRule::classes).
  const ClassCount& base_classes() const { return base_classes_; }
  const ReportOptions& options() const { return options_; }

 private:
  void each_field(const std::function<void(int64_t&)>& f) override;

  ReportOptions options_;
  int64_t experts_;
  RuleCount base_;
  Rules moe_, oracle_;
  std::vector<RuleCount> anytime_;
  SpecialisationCount spec_;
  ClassCount base_classes_;
};

struct Report {
  nlohmann::json json;      // base, moe, class_oracle, anytime, envelope, specialisation, routing, anytime_summary
  std::string anytime_csv;  // tau,accuracy,macs,early_exit_rate,mean_experts_per_sample
};

// The report from a tally summed over every test sample. costs.ensembler is
// set from the options (the anytime model's rule).
Report build_report(const Tally& tally, Costs costs);
// The same from the outputs of every test sample at once.
Report build_report(const TestOutputs& t, Costs costs, const ReportOptions& options);

// The report's "specialisation" (Krishnamurthy et al.'s metrics, bits) and
// "routing" (Count(E = argmax g, Y), [K][C]) entries from summed counts.
nlohmann::json specialisation_json(const SpecialisationCount& count, int64_t experts, int64_t num_classes);
// routing.png from a report's "routing" entry.
void write_routing_plot(const std::string& routing_png, const nlohmann::json& report,
                        const std::vector<std::string>& class_names);

// accuracy_vs_macs.png and routing.png from a report built above.
void write_report_plots(const std::string& accuracy_png, const std::string& routing_png, const nlohmann::json& report,
                        const std::string& dataset, const std::vector<std::string>& class_names);

}  // namespace smoe::eval
