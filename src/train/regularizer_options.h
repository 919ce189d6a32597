// The batch-level regularisers of a jointly trained MoE (Krishnamurthy et
// al. Section 6, LEMUR; train/moe_losses.h), under joint.*, distill.* and
// finetune.*. Each key beside its field (core/options.h).
#pragma once

#include "core/options.h"

namespace smoe {

struct RegularizerConfig {
  double importance = 0;    // w in L_imp = w * CV(sum over the batch of g)^2
  double load_balance = 0;  // lambda in L_bal = lambda * mean_e (u_e - mean u)^2, u = sum over the batch of g (LEMUR)
  double similarity_same = 0;  // beta_s: same-expert pairs close
  double diversity = 0;        // lambda of the mean pairwise cosine similarity of the experts' mean outputs (LEMUR)
  double similarity_diff = 0;  // beta_d: different-expert pairs far

  void describe(options::Table& t) {
    t.key("importance", importance, "w of the importance loss w * CV(sum over the batch of g(k|x))^2").at_least(0);
    t.key("load_balance", load_balance,
          "lambda of the load-balance loss lambda * mean_e (u_e - mean u)^2, u_e = sum over the batch of g(e|x) "
          "(LEMUR)")
        .at_least(0);
    t.key("similarity_same", similarity_same,
          "beta_s of the sample-similarity loss: pulls same-expert pairs together (M = P'DP / B^2)")
        .at_least(0);
    t.key("diversity", diversity,
          "lambda of the diversity loss: mean pairwise cosine similarity of the experts' mean output distributions "
          "over the samples routed to them (LEMUR)")
        .at_least(0);
    t.key("similarity_diff", similarity_diff,
          "beta_d of the sample-similarity loss: pushes different-expert pairs apart (M = P'DP / B^2)")
        .at_least(0);
  }
};

}  // namespace smoe
