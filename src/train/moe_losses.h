// The batch-level regularisers of a jointly trained MoE (Krishnamurthy et
// al. Section 6), for a batch of B samples with gate probabilities P [B, K]:
//
//   importance   L_imp = w * CV(I)^2,  I = sum_i P_i  [K]           (eq. 7)
//                CV = std / mean with the unbiased std (torch.std, as in
//                Shazeer et al. and the authors' code); 0 when K = 1.
//   load balance L_bal = lambda * mean_e (u_e - mean(u))^2, u = I     (LEMUR)
//   diversity    L_div = lambda * mean_{e<f} cos(m_e, m_f), m_e the mean of
//                softmax(f_e(x)) over the batch's samples routed to e  (LEMUR)
//   similarity   M = P^T D P / B^2, D_ij = |x_i - x_j|^2 / max_ij |x_i - x_j|^2
//                L_s = beta_s tr(M) / K - beta_d (sum(M) - tr(M)) / (K^2 - K)   (eq. 10)
//
// M is divided by B^2 in both terms (a mean over pairs, so the coefficients
// do not depend on the batch size); the authors' code divides only the
// second term by B^2, so their beta_s equals ours / B^2 (at B = 512, their
// 1e-7 is our 0.026). Since every row of P sums to 1, sum(M) = sum(D) / B^2
// does not depend on the gate: both terms pull tr(M) down, i.e. both send
// near samples to the same expert.
//
// Data-parallel training holds a batch's rows on several ranks, so the
// gradients are also given per row: dL/dP_i for the rows a rank holds, from
// the whole batch's P (gathered, no gradient) and the distances of those
// rows to every sample of the batch.
#pragma once

#include <ATen/core/Tensor.h>

#include "train/regularizer_options.h"

namespace smoe::train {

// Squared Euclidean distances between the rows of a [n, d] and b [m, d]: [n, m].
at::Tensor pairwise_sq_distances(const at::Tensor& a, const at::Tensor& b);

// The losses on a whole batch (differentiable in probs). dist: D, already
// normalised by its maximum.
at::Tensor importance_loss(const at::Tensor& probs, double w);
at::Tensor load_balance_loss(const at::Tensor& probs, double lambda);
at::Tensor similarity_loss(const at::Tensor& probs, const at::Tensor& dist, double beta_s, double beta_d);

// d(L_imp + L_bal)/dP_i [K], the same for every row i (both depend on P
// only through I); *importance and *balance get their values. all_probs: [B, K].
at::Tensor usage_grad(const at::Tensor& all_probs, double w, double lambda, double* importance, double* balance);
// dL_s/dP_i [r, K] for r rows of the batch: dist_rows [r, B] their normalised
// distances to every sample, all_probs [B, K], row_probs [r, K] their P.
// *partial gets their share of L_s (the shares of all rows sum to L_s).
at::Tensor similarity_grad_rows(const at::Tensor& dist_rows, const at::Tensor& all_probs, const at::Tensor& row_probs,
                                double beta_s, double beta_d, double* partial);

// The diversity loss from the experts' summed output distributions
// sums [K, C] and routed counts [K] (no gradient; differentiable in `sums`
// when it requires grad).
at::Tensor diversity_loss(const at::Tensor& sums, const at::Tensor& counts, double lambda);
// dL_div/dsums [K, C] (the same for every routed sample's softmax(f_e(x)));
// *value gets L_div.
at::Tensor diversity_grad(const at::Tensor& sums, const at::Tensor& counts, double lambda, double* value);

// Whether any batch-level regulariser is on.
inline bool any_regularizer(const RegularizerConfig& r) {
  return r.importance > 0 || r.load_balance > 0 || r.similarity_same > 0 || r.similarity_diff > 0 || r.diversity > 0;
}

}  // namespace smoe::train
