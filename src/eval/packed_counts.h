// Counts that ranks sum: a tally lists its integers once, in a fixed order
// (each_field, visiting every int64_t it holds), and pack and unpack follow
// from it, so that the order the ranks' counts are summed in and read back
// cannot differ. Both MoE families' tallies (eval::Tally, eval::JointTally)
// are such counts.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace smoe::eval {

class PackedCounts {
 public:
  virtual ~PackedCounts() = default;
  std::vector<int64_t> pack() const;
  void unpack(const std::vector<int64_t>& flat);

 protected:
  // Calls f on every count, always in the same order.
  virtual void each_field(const std::function<void(int64_t&)>& f) = 0;
};

}  // namespace smoe::eval
