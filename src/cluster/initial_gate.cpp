#include "cluster/initial_gate.h"

namespace smoe::cluster {

// The built-in strategies, one file each.
std::shared_ptr<const InitialGate> make_kmeans_initial_gate();     // kmeans_gate.cpp
std::shared_ptr<const InitialGate> make_per_class_initial_gate();  // per_class_gate.cpp
std::shared_ptr<const InitialGate> make_dfcp_initial_gate();       // dfcp_gate.cpp

Registry<std::shared_ptr<const InitialGate>>& initial_gates() {
  static Registry<std::shared_ptr<const InitialGate>> registry(
      "initial gate", "cluster.method",
      {{"kmeans", make_kmeans_initial_gate()}, {"per_class", make_per_class_initial_gate()},
       {"dfcp", make_dfcp_initial_gate()}});
  return registry;
}

}  // namespace smoe::cluster
