#include "cluster/initial_gate.h"

#include "cluster/dfcp_options.h"
#include "core/log.h"

namespace smoe::cluster {

void CentroidInitialGate::init_gate(models::GateModule& gate, const Tensors& saved, double temperature) const {
  if (!gate.init_from_centroids(saved.at("centroids"), temperature))
    log::info("gate      this gate kind cannot start from the centroids: it keeps its initialisation");
}

// The built-in strategies, one file each (DFCP's options: dfcp_options.h).
std::shared_ptr<const InitialGate> make_kmeans_initial_gate();     // kmeans_gate.cpp
std::shared_ptr<const InitialGate> make_per_class_initial_gate();  // per_class_gate.cpp
std::shared_ptr<const InitialGate> make_dfcp_initial_gate();       // dfcp_gate.cpp

Registry<std::shared_ptr<const InitialGate>>& initial_gates() {
  static Registry<std::shared_ptr<const InitialGate>> registry(
      "initial gate", "cluster.method",
      {{"kmeans", make_kmeans_initial_gate()},
       {"per_class", make_per_class_initial_gate()},
       {"dfcp", make_dfcp_initial_gate(), options::prototype<DfcpOptions>()}});
  return registry;
}

namespace {
[[maybe_unused]] const bool loads = options::add_variant_loader([] { initial_gates(); });
}  // namespace

}  // namespace smoe::cluster
