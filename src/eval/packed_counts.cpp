#include "eval/packed_counts.h"

#include "core/error.h"

namespace smoe::eval {

std::vector<int64_t> PackedCounts::pack() const {
  std::vector<int64_t> flat;
  const_cast<PackedCounts*>(this)->each_field([&](int64_t& v) { flat.push_back(v); });
  return flat;
}

void PackedCounts::unpack(const std::vector<int64_t>& flat) {
  size_t i = 0;
  each_field([&](int64_t& v) {
    SMOE_ASSERT(i < flat.size(), "a tally of {} values is too short", flat.size());
    v = flat[i++];
  });
  SMOE_ASSERT(i == flat.size(), "a tally of {} values, expected {}", flat.size(), i);
}

}  // namespace smoe::eval
