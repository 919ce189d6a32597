// The evaluation section of the configuration (eval.*). Each key beside its
// field (core/options.h).
#pragma once

#include <cstdint>
#include <vector>

#include "core/options.h"

namespace smoe {

struct EvalConfig {
  std::vector<double> taus{0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0};
  int64_t batch_size = 500;
  int64_t timing_samples = 1000;  // test samples the report's inference times are measured on (0: not measured)
  bool class_oracle = false;      // per_class only: route by the true class too

  void describe(options::Table& t) {
    t.key("taus", taus, "thresholds of the anytime model").at_least(0).at_most(1);
    t.key("batch_size", batch_size, "evaluation batch size").at_least(1);
    t.key("timing_samples", timing_samples,
          "test samples on which the coordinator measures the wall-clock inference time per sample of the base "
          "model, the top-1 MoE and the anytime model (0: not measured)")
        .at_least(0);
    t.key("class_oracle", class_oracle, "per_class only: also report routing by the true class");
  }
};

}  // namespace smoe
