// comm/solo_communicator.h: a group of one passes every value-by-value check
// of the collectives (as one rank of the thread and MPI communicators does),
// refuses what a group of one cannot do in one line, and never waits for a
// message nobody could send.
#include <gtest/gtest.h>

#include "comm/collective_checks.h"
#include "comm/solo_communicator.h"
#include "common/expect_error.h"

namespace smoe::comm {
namespace {

TEST(SoloCommunicator, EveryCollectiveValueByValue) {
  SoloCommunicator c;
  testing::check_collectives(c);
  EXPECT_EQ(c.size(), 1);
}

TEST(SoloCommunicator, RefusesOtherRanksAndNeverWaits) {
  SoloCommunicator c;
  std::vector<int64_t> one(1), two(2);
  EXPECT_ERROR(c.allgather(host_buffer(one), host_buffer(two)), "allgather: receive buffer holds 2 elements");
  EXPECT_ERROR(c.broadcast(host_buffer(one), 1), "broadcast: root rank 1 of a group of one");
  EXPECT_ERROR(c.send(1, 5, "x"), "send: destination rank 1 of a group of one");
  EXPECT_ERROR(c.recv(0, 5), "recv: no message with tag 5 was sent to a group of one");
  c.send(0, 5, "to myself");
  EXPECT_EQ(c.recv(kAnySource, 5).payload, "to myself");
}

}  // namespace
}  // namespace smoe::comm
