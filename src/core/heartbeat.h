// What this process (one rank) is doing, for the stall inspector
// (pipeline/stall_inspector.h): its stage, its last activity, when it last
// made progress, and whether it is waiting on other ranks (inside a
// collective or for a control message), which is not a stall of its own.
// Training loops, inference passes and K-means beat as they go.
#pragma once

#include <string>
#include <string_view>

namespace smoe::heartbeat {

// The stage this rank is in (e.g. "experts").
void stage(std::string_view name);
// Progress: `activity` says what was just done ("expert 3 step 120").
void beat(std::string_view activity);

// While alive, this rank waits on other ranks (RAII; nests).
class Waiting {
 public:
  explicit Waiting(std::string_view what);
  ~Waiting();
  Waiting(const Waiting&) = delete;
  Waiting& operator=(const Waiting&) = delete;
};

struct Status {
  double idle_seconds = 0;  // since the last beat (or the last wait's start or end)
  bool waiting = false;     // inside a Waiting scope
  std::string stage, activity;
};
Status status();

}  // namespace smoe::heartbeat
