// Which device a rank uses, decided from what the ranks of its node can see —
// whatever binding put them there: all of the node's GPUs visible to every
// rank (--gpus-per-node), one GPU per rank (--gpus-per-task=1, --gpu-bind,
// a per-rank CUDA_VISIBLE_DEVICES), or any subsets. A pure function of the
// node's view, so that every binding is a unit-test case (DDP and Horovod
// pick "local rank among the visible devices"; this is that rule, made safe
// for bindings where ranks see different devices).
//
// Devices are named by an id that is the same for every rank that sees the
// device (a CUDA device's UUID), so that two ranks that picked the same GPU
// under different indices are found out.
#pragma once

#include <string>
#include <vector>

namespace smoe::pipeline {

// What one rank of a node sees: the ids of its visible devices, in the order
// of their indices.
struct NodeRank {
  int local_rank = 0;
  std::vector<std::string> visible;
};

struct DeviceChoice {
  int index = -1;                // into the rank's visible devices; -1: it sees none
  std::string id;                // the chosen device's id
  std::vector<int> shared_with;  // other local ranks that chose the same device
};

// The ranks that see the same list of devices share them out in local-rank
// order (the k-th such rank takes device k mod n): one visible device means
// that one; all visible means local rank mod n. When a node has more ranks
// than devices, some ranks share one: `shared_with` names them (the caller
// decides what sharing means). Throws when `local_rank` is not in `node`.
DeviceChoice choose_device_index(const std::vector<NodeRank>& node, int local_rank);

}  // namespace smoe::pipeline
