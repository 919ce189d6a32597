// Specialisation metrics of Krishnamurthy et al. (Section 3, Appendix A), in
// bits: the mean per-sample gate entropy (sparsity), the entropy of the mean
// gate (expert usage), and the mutual information I(E; Y) between the
// selected expert and the class. Knows nothing of models or ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace smoe::eval {

struct Specialisation {
  double gate_entropy = 0;        ///< mean_x H(g(.|x))          (eq. 1)
  double usage_entropy = 0;       ///< H(mean_x g(.|x))          (eq. 2)
  double mutual_information = 0;  ///< I(E;Y) = H(E) + H(Y) - H(E,Y)  (eq. 3)
};

// The sums the metrics need, as integers that add up exactly across batches
// and ranks: real values in fixed point (2^-32 resolution per sample).
struct SpecialisationCount {
  static constexpr double kScale = 4294967296.0;  // 2^32
  int64_t samples = 0;
  int64_t entropy = 0;           // sum_x H(g(.|x)) in bits, fixed point
  std::vector<int64_t> usage;    // [K] sum_x g(k|x), fixed point
  std::vector<int64_t> routing;  // [K * C] Count(E = argmax g, Y)
  void add(const SpecialisationCount& other);
};
SpecialisationCount count_specialisation(const at::Tensor& gate, const at::Tensor& labels, int64_t num_classes);
Specialisation specialisation_of(const SpecialisationCount& c, int64_t num_classes);

// gate: [n, K] probabilities; labels: int64 [n]; the selected expert of a
// sample is argmax_k gate.
Specialisation specialisation(const at::Tensor& gate, const at::Tensor& labels, int64_t num_classes);

// Count(E, Y) [K, C]: how often expert k is selected for samples of class c.
at::Tensor routing_table(const at::Tensor& expert, const at::Tensor& labels, int64_t experts, int64_t num_classes);

// Entropy in bits of a probability vector (zeros contribute nothing).
double entropy_bits(const at::Tensor& p);

}  // namespace smoe::eval
