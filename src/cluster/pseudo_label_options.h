// The pseudo-labeller's options (cluster/pseudo_label.h) and the
// pseudo_label stage's section, pseudo.* (DFCP-MoE Section 3.1.4; scheme
// dfcp).
#pragma once

#include <cstdint>

#include "core/options.h"

namespace smoe {
namespace cluster {

struct PseudoLabelOptions {
  int64_t dim = 64;          ///< projection output dimension
  int64_t steps = 600;       ///< training steps
  int64_t batch_size = 256;  ///< pairs per step
  double lr = 1e-3;          ///< Adam
  double margin = 1.0;       ///< contrastive margin m
  uint64_t seed = 0;         ///< initialisation and pairs

  void describe(options::Table& t) {
    t.key("dim", dim, "pseudo_label: output dimension of the Siamese projection").at_least(1);
    t.key("steps", steps, "pseudo_label: training steps of the projection").at_least(1);
    t.key("batch_size", batch_size, "pseudo_label: pairs of trusted samples per step").at_least(2);
    t.key("lr", lr, "pseudo_label: Adam learning rate").above(0);
    t.key("margin", margin, "pseudo_label: contrastive margin on the distance of L2-normalised projections (in [0, 2])")
        .above(0)
        .at_most(2);
  }
};

}  // namespace cluster

struct PseudoConfig {
  cluster::PseudoLabelOptions labeler;  // the seed is the stage's
  double validation = 0.2;              // share of the trusted subset held out to choose tau by F1

  void describe(options::Table& t) {
    t.inline_section(labeler);
    t.key("validation", validation,
          "pseudo_label: share of the trusted subset held out to choose the similarity threshold tau by F1")
        .above(0)
        .at_most(0.9);
  }
};

}  // namespace smoe
