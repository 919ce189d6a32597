// The expert scheduler at cluster scale: run_tasks' policy (longest first,
// each free rank takes the next task, one request/reply round trip per task)
// simulated for P up to 256 ranks and K up to 1024 experts with
// heterogeneous costs, against the lower bound max(sum t / P, max t).
//
//   simulate_scheduler [report.json] [--dispatch SECONDS] [--spread SIGMA] [--seed N]
//
// Per-expert durations come from a run's report.json (experts[].seconds),
// resampled with a log-normal spread (default sigma 0.5) to reach K tasks;
// without a report, 60 s median experts are used. Tasks are ordered as
// run_tasks orders them: by the scheduler's own predicted cost
// (experts[].predicted_cost, from MACs and samples), which knows the
// expert's architecture but not the resampled spread. Beside it: the order
// an oracle knowing the true durations would use, and plain id order.
// Without predictions in the report every task predicts the same cost.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>

#include "core/rng.h"
#include "pipeline/scheduler.h"

using namespace smoe;

int main(int argc, char** argv) {
  std::vector<double> measured, predicted;
  double dispatch = 0.002, sigma = 0.5;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dispatch" && i + 1 < argc)
      dispatch = std::atof(argv[++i]);
    else if (a == "--spread" && i + 1 < argc)
      sigma = std::atof(argv[++i]);
    else if (a == "--seed" && i + 1 < argc)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else {
      std::ifstream in(a);
      if (!in) {
        std::fprintf(stderr, "simulate_scheduler: error: cannot read %s\n", a.c_str());
        return 1;
      }
      auto r = nlohmann::json::parse(in);
      for (const auto& e : r.at("experts")) {
        measured.push_back(e.at("seconds").get<double>());
        if (e.contains("predicted_cost")) predicted.push_back(e.at("predicted_cost").get<double>());
      }
    }
  }
  if (measured.empty()) measured = {60.0};
  const bool by_prediction = predicted.size() == measured.size();
  std::printf("tasks ordered by %s (lpt); oracle: by their true durations\n",
              by_prediction ? "the scheduler's predicted costs" : "a constant prediction (the report has none)");
  std::printf("measured expert durations: %zu (mean %.2f s); log-normal spread sigma %.2f; dispatch %.3f s\n",
              measured.size(), std::accumulate(measured.begin(), measured.end(), 0.0) / measured.size(), sigma,
              dispatch);
  std::printf("%6s %6s %12s %12s %12s %10s %10s %10s\n", "K", "P", "makespan_s", "lower_bd_s", "in_order_s", "lpt/lb",
              "oracle/lb", "order/lb");
  double worst_256 = 0, worst_lpt = 0, worst_oracle = 0, worst_order = 0;
  for (int K : {16, 64, 256, 1024}) {
    smoe::SplitMix64 rng(seed + static_cast<uint64_t>(K));
    std::vector<double> t(static_cast<size_t>(K)), pred(static_cast<size_t>(K));
    for (size_t i = 0; i < t.size(); ++i) {
      // Box-Muller normal draw for the log-normal multiplier.
      double u1 = std::max(rng.uniform(), 1e-12), u2 = rng.uniform();
      double z = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
      const size_t src = rng.below(measured.size());
      const double m = std::exp(sigma * z - sigma * sigma / 2);
      t[i] = measured[src] * m;
      pred[i] = by_prediction ? predicted[src] : 1.0;  // the spread is not predictable
    }
    std::vector<int64_t> ids(static_cast<size_t>(K));
    std::iota(ids.begin(), ids.end(), 0);
    auto lpt = pipeline::longest_first(ids, pred);
    auto oracle = pipeline::longest_first(ids, t);
    const double total = std::accumulate(t.begin(), t.end(), 0.0), longest = *std::max_element(t.begin(), t.end());
    for (int P : {1, 2, 4, 8, 16, 32, 64, 128, 256}) {
      const double lb = std::max(total / P, longest);
      const double m = pipeline::simulate_schedule(lpt, t, P, dispatch);
      const double plain = pipeline::simulate_schedule(ids, t, P, dispatch);
      const double best = pipeline::simulate_schedule(oracle, t, P, dispatch);
      std::printf("%6d %6d %12.1f %12.1f %12.1f %10.3f %10.3f %10.3f\n", K, P, m, lb, plain, m / lb, best / lb,
                  plain / lb);
      if (P == 256) worst_256 = std::max(worst_256, m / lb);
      worst_lpt = std::max(worst_lpt, m / lb);
      worst_oracle = std::max(worst_oracle, best / lb);
      worst_order = std::max(worst_order, plain / lb);
    }
  }
  std::printf("worst makespan / lower bound at 256 ranks: %.3f\n", worst_256);
  std::printf("worst makespan / lower bound anywhere: predicted order %.3f, oracle order %.3f, id order %.3f\n",
              worst_lpt, worst_oracle, worst_order);
  return 0;
}
