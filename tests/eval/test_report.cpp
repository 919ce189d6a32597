// eval/report.h: the report is a function of integer counts, so summing the
// tallies of any split of the test samples (batches, ranks) gives exactly the
// report of all samples at once.
#include "eval/report.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace smoe::eval {
namespace {

TestOutputs random_outputs(int64_t n, int64_t K, int64_t C, uint64_t seed) {
  torch::manual_seed(seed);
  TestOutputs t;
  t.labels = torch::randint(C, {n}, torch::kLong);
  t.base_logits = torch::randn({n, C});
  t.gate = torch::softmax(2 * torch::randn({n, K}), 1);
  t.expert_logits = torch::randn({n, K, C});
  t.ensembled["bagging"] = torch::softmax(torch::randn({n, K, C}), 2);
  t.ensembled["stacking"] = torch::softmax(torch::randn({n, K, C}), 2);
  t.oracle_gate = torch::one_hot(t.labels % K, K).to(torch::kFloat);
  return t;
}

TestOutputs rows(const TestOutputs& t, int64_t from, int64_t to) {
  TestOutputs p;
  p.labels = t.labels.slice(0, from, to);
  p.base_logits = t.base_logits.slice(0, from, to);
  p.gate = t.gate.slice(0, from, to);
  p.expert_logits = t.expert_logits.slice(0, from, to);
  for (const auto& [name, v] : t.ensembled) p.ensembled[name] = v.slice(0, from, to);
  p.oracle_gate = t.oracle_gate.slice(0, from, to);
  return p;
}

ReportOptions options(int64_t C) {
  ReportOptions o;
  o.taus = {0.0, 0.05, 0.1, 0.3, 1.0};
  o.ensembler = "bagging";
  o.ensembler_macs = {{"bagging", 0.0}, {"stacking", 7.0}};
  o.class_oracle = true;
  o.num_classes = C;
  return o;
}

TEST(Tally, SummedPartsGiveExactlyTheReportOfTheWhole) {
  const int64_t n = 203, K = 3, C = 4;
  TestOutputs all = random_outputs(n, K, C, 7);
  const Costs costs{1000, 20, {100, 150, 90}, 0};
  const Report whole = build_report(all, costs, options(C));

  // Three "ranks" with uneven shares, each adding its batches of 32.
  std::vector<int64_t> cuts = {0, 17, 130, n};
  std::vector<int64_t> sum;
  for (size_t r = 0; r + 1 < cuts.size(); ++r) {
    Tally part(K, {"bagging", "stacking"}, options(C));
    for (int64_t b = cuts[r]; b < cuts[r + 1]; b += 32) part.add(rows(all, b, std::min(b + 32, cuts[r + 1])));
    auto packed = part.pack();
    if (sum.empty()) sum.assign(packed.size(), 0);
    for (size_t i = 0; i < packed.size(); ++i) sum[i] += packed[i];
  }
  Tally reduced(K, {"bagging", "stacking"}, options(C));
  reduced.unpack(sum);
  EXPECT_EQ(reduced.samples(), n);
  const Report split = build_report(reduced, costs);
  EXPECT_EQ(split.json.dump(), whole.json.dump());  // bit for bit, specialisation included
  EXPECT_EQ(split.anytime_csv, whole.anytime_csv);

  // And the counts are what they say: top-1 accuracy without ensembling.
  at::Tensor pick = torch::softmax(all.expert_logits, 2)
                        .gather(1, all.gate.argmax(1).view({-1, 1, 1}).expand({-1, 1, C}))
                        .squeeze(1)
                        .argmax(1);
  const double acc = (pick == all.labels).sum().item<int64_t>() / static_cast<double>(n);
  EXPECT_DOUBLE_EQ(whole.json["moe"]["no_ensembling"]["accuracy"].get<double>(), acc);
  // The oracle routes class c to expert c mod K: its routing block exists.
  EXPECT_TRUE(whole.json.contains("class_oracle"));
  int64_t routed = 0;
  for (const auto& row : whole.json["routing"])
    for (const auto& v : row) routed += v.get<int64_t>();
  EXPECT_EQ(routed, n);
}

TEST(Tally, UnpackRefusesAVectorOfAnotherShape) {
  Tally t(2, {"bagging"}, [] {
    ReportOptions o;
    o.taus = {0.5};
    o.ensembler = "bagging";
    o.ensembler_macs = {{"bagging", 0.0}};
    o.num_classes = 3;
    return o;
  }());
  auto flat = t.pack();
  flat.push_back(0);
  EXPECT_THROW(t.unpack(flat), std::exception);
}

}  // namespace
}  // namespace smoe::eval
