// Initial-gate strategies (Royer et al. Algorithm 1 step 2; Table 5; later
// DFCP-MoE's double-stage clustering): from the base model's embeddings of
// the training samples, the frozen initial gate g0 [N, K] the experts train
// on, and the starting point of the gate g. Chosen by cluster.method; a new
// strategy is one file plus one line in initial_gates() (initial_gate.cpp).
// fit() runs on one process (comm unset: every row given) or collectively on
// every rank (comm set: each rank gives its own rows and gets their g0);
// knows nothing of files.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cluster/kmeans.h"
#include "comm/communicator.h"
#include "core/registry.h"
#include "core/variant_options.h"
#include "models/gate.h"

namespace smoe::cluster {

using Tensors = std::map<std::string, at::Tensor>;

struct InitialGateInputs {
  at::Tensor embedding;  // float [n, D] pre-logits (L2-normalised when cluster.normalize)
  at::Tensor labels;     // int64 [n]
  at::Tensor ids;        // int64 [n] the rows' global ids (with comm)
  comm::Communicator* comm = nullptr;
  int64_t num_classes = 0;
  KMeansOptions kmeans;                                    // k = experts.count, restarts, iterations, tolerance, seed
  double temperature = 0.1;                                // T in g0 = softmax(-d^2 / T)
  bool hard = false;                                       // one-hot g0
  std::shared_ptr<const options::VariantOptions> options;  // the strategy's own (cluster.<method>.*), if any
};

struct InitialGateFit {
  at::Tensor g0;          // float [n, K] of the given rows, rows sum to 1
  at::Tensor assign;      // int64 [n] the given rows' cluster (kmeans), if any
  Tensors saved;          // what cluster.pt keeps beside g0 and assign (centroids, ...), the same on every rank
  nlohmann::json record;  // summary for run.json, the same on every rank
};

class InitialGate {
 public:
  virtual ~InitialGate() = default;
  virtual InitialGateFit fit(const InitialGateInputs& in) const = 0;
  // The gate kind the MoE routes with: the configured gate.kind (then
  // fitted to g0 by KL), or a fixed routing this strategy defines.
  virtual std::string gate_kind(const std::string& configured) const { return configured; }
  // Prepares a fresh gate of gate_kind() from what fit() saved.
  virtual void init_gate(models::GateModule& gate, const Tensors& saved, double temperature) const {}
  // An oracle routing of samples by their true labels ([N, K]), for
  // eval.class_oracle (Royer et al. Table 5); undefined when there is none.
  virtual bool has_oracle() const { return false; }
  virtual at::Tensor oracle_gate(const at::Tensor& labels, const Tensors& saved, int64_t experts) const { return {}; }
};

// A strategy whose fit() saves "centroids": the gate starts from their
// closed form (GateModule::init_from_centroids) where its kind can.
class CentroidInitialGate : public InitialGate {
 public:
  void init_gate(models::GateModule& gate, const Tensors& saved, double temperature) const override;
};

// cluster.method -> strategy. Built in: "kmeans", "per_class", "dfcp" (with
// its options, cluster.dfcp.*).
Registry<std::shared_ptr<const InitialGate>>& initial_gates();

}  // namespace smoe::cluster
