// Building a module draws its initial weights from libtorch's one global
// generator. Where ranks are threads (the tests' comm::ThreadGroup, on which
// rank-count invariance and the device tests rest), a rank that seeds the
// generator and builds a model must not interleave with another rank's
// draws, or its weights depend on timing:
//   * every seeded build holds init_mutex() (pipeline::ModelStore);
//   * a module built only to be asked a question (a config check: is this
//     gate trainable, what is this expert's hidden size) is built inside a
//     ProbeScope, which holds the same lock and puts the generator back as
//     it was, so that a check draws nothing.
#pragma once

#include <mutex>
#include <string>

namespace smoe::models {

std::recursive_mutex& init_mutex();

class ProbeScope {
 public:
  ProbeScope();
  ~ProbeScope();
  ProbeScope(const ProbeScope&) = delete;
  ProbeScope& operator=(const ProbeScope&) = delete;

 private:
  std::unique_lock<std::recursive_mutex> lock_;
  std::string state_;  // the CPU generator's state on entry
};

}  // namespace smoe::models
