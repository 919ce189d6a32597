#include "pipeline/device_choice.h"

#include <algorithm>

#include "core/error.h"

namespace smoe::pipeline {
namespace {

int index_for(const std::vector<NodeRank>& node, const NodeRank& me) {
  if (me.visible.empty()) return -1;
  // Position among the ranks that see exactly the same devices.
  int position = 0;
  for (const auto& other : node)
    if (other.visible == me.visible && other.local_rank < me.local_rank) ++position;
  return position % static_cast<int>(me.visible.size());
}

}  // namespace

DeviceChoice choose_device_index(const std::vector<NodeRank>& node, int local_rank) {
  auto me = std::find_if(node.begin(), node.end(), [&](const NodeRank& r) { return r.local_rank == local_rank; });
  SMOE_CHECK(me != node.end(), "device choice: local rank {} is not among its node's {} ranks", local_rank,
             node.size());
  DeviceChoice c;
  c.index = index_for(node, *me);
  if (c.index < 0) return c;
  c.id = me->visible[static_cast<size_t>(c.index)];
  for (const auto& other : node) {
    if (other.local_rank == local_rank) continue;
    const int i = index_for(node, other);
    if (i >= 0 && other.visible[static_cast<size_t>(i)] == c.id) c.shared_with.push_back(other.local_rank);
  }
  std::sort(c.shared_with.begin(), c.shared_with.end());
  return c;
}

}  // namespace smoe::pipeline
