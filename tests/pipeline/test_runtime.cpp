// Where each rank runs: one GPU per rank, and a deliberate error when a node
// has more ranks than GPUs (NCCL refuses two ranks on one device).
#include <gtest/gtest.h>

#include "common/expect_error.h"
#include "pipeline/runtime.h"

namespace smoe::pipeline {
namespace {

TEST(Runtime, EachRankGetsItsOwnGpu) {
  EXPECT_EQ(choose_device("auto", 4, 5, 1, 4), c10::Device(c10::kCUDA, 1));
  EXPECT_EQ(choose_device("cuda", 2, 3, 1, 2), c10::Device(c10::kCUDA, 1));
  EXPECT_EQ(choose_device("cpu", 4, 0, 0, 4), c10::Device(c10::kCPU));
  EXPECT_EQ(choose_device("auto", 0, 0, 0, 8), c10::Device(c10::kCPU));  // no GPU: the CPU
}

TEST(Runtime, MoreRanksOnANodeThanGpusIsAnErrorAtStartUp) {
  // Two ranks, one GPU (the GPU machine's case): both would use cuda:0.
  EXPECT_ERROR(choose_device("auto", 1, 1, 1, 2),
               "runtime.device: 2 ranks on the node of rank 1 but 1 GPU (local ranks 0 and 1 would share cuda:0); "
               "NCCL needs one GPU per rank: start at most 1 rank per node, or set runtime.device=cpu");
  // Every rank of the node says so, not only those that would share.
  EXPECT_ERROR(choose_device("cuda", 2, 7, 1, 3),
               "3 ranks on the node of rank 7 but 2 GPUs (local ranks 0 and 2 would share cuda:0)");
  EXPECT_ERROR(choose_device("cuda", 0, 2, 0, 1), "runtime.device is cuda but no CUDA device is available on rank 2");
  // The CPU is always possible.
  EXPECT_EQ(choose_device("cpu", 1, 1, 1, 2), c10::Device(c10::kCPU));
}

}  // namespace
}  // namespace smoe::pipeline
