// The evaluation section of the configuration (eval.*). Each key beside its
// field (core/options.h).
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/options.h"

namespace smoe {

struct EvalConfig {
  std::vector<double> taus{0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0};
  int64_t batch_size = 500;
  int64_t timing_samples = 1000;  // test samples the report's inference times are measured on (0: not measured)
  bool class_oracle = false;      // per_class only: route by the true class too

  void describe(options::Table& t) {
    t.key("taus", taus, "thresholds of the anytime model, increasing").at_least(0).at_most(1);
    t.rule([this](const std::string& at) {
      SMOE_CHECK(!taus.empty(), "config key '{}taus' is empty: the anytime curve needs at least one threshold", at);
      for (size_t i = 1; i < taus.size(); ++i)
        SMOE_CHECK(taus[i] > taus[i - 1],
                   "config key '{}taus': expected increasing thresholds without repeats, got {} after {} (entry {})",
                   at, taus[i], taus[i - 1], i);
    });
    t.key("batch_size", batch_size, "evaluation batch size").at_least(1);
    t.key("timing_samples", timing_samples,
          "test samples on which the coordinator measures the wall-clock inference time per sample of the base "
          "model, the top-1 MoE and the anytime model (0: not measured)")
        .at_least(0);
    t.key("class_oracle", class_oracle, "per_class only: also report routing by the true class");
  }
};

}  // namespace smoe
