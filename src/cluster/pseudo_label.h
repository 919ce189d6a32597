// Pseudo-labels from a small trusted labelled subset (DFCP-MoE Section
// 3.1.4): a Siamese projection — two layers, both branches sharing them —
// trained with the pairwise contrastive loss
//     y d^2 + (1 - y) max(0, m - d)^2
// on pairs of trusted samples (half of them same-class), d the Euclidean
// distance of the projections and m the margin. A sample's similarity to a
// trusted sample is exp(-d / m); it takes the label of its most similar
// trusted sample when that similarity is at least tau, else it is an outlier
// (label -1). tau is the value of the grid 0, 0.01, ..., 1 with the best F1
// on held-out trusted samples (precision: right among those labelled;
// recall: right among all of them); ties go to the lower tau.
// Knows nothing of ranks or files: the stage (pipeline/stages/pseudo_label.cpp)
// trains on one rank and broadcasts the projection.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

#include "cluster/pseudo_label_options.h"

namespace torch::nn {
class Module;
}

namespace smoe::cluster {

struct TauChoice {
  double tau = 0, f1 = 0, precision = 0, recall = 0;
};

class PseudoLabeler {
 public:
  PseudoLabeler(int64_t input_dim, const PseudoLabelOptions& options);
  ~PseudoLabeler();
  // Trains the projection on pairs of the rows x [t, D] with labels y [t].
  void fit(const at::Tensor& x, const at::Tensor& y);
  // The projection of rows [n, D] -> [n, dim].
  at::Tensor project(const at::Tensor& x) const;
  // Nearest trusted row of each row of x (by projection): (similarity [n], its label [n]).
  std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& x, const at::Tensor& trusted_x,
                                            const at::Tensor& trusted_y) const;
  // tau by F1: rows val_x (labels val_y) labelled from ref_x (ref_y).
  TauChoice choose_tau(const at::Tensor& ref_x, const at::Tensor& ref_y, const at::Tensor& val_x,
                       const at::Tensor& val_y) const;
  // Labels of rows x from the trusted rows, -1 below tau.
  at::Tensor label(const at::Tensor& x, const at::Tensor& trusted_x, const at::Tensor& trusted_y, double tau) const;
  // The projection's parameters (to broadcast).
  torch::nn::Module& module();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  PseudoLabelOptions options_;
};

}  // namespace smoe::cluster
