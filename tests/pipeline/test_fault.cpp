// The fault points (SMOE_FAULT): a fault fires at its named point on its
// rank and nowhere else; a mistyped SMOE_FAULT is an error, not a silent
// no-op that would let a failure test pass without its fault; `wait` holds
// its rank until a stop signal arrives, however long that takes.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <thread>

#include "common/expect_error.h"
#include "common/hang_guard.h"
#include "core/heartbeat.h"
#include "core/stop.h"
#include "pipeline/fault.h"

namespace smoe::pipeline {
namespace {

class Fault : public ::testing::Test {
 protected:
  void TearDown() override {
    unsetenv("SMOE_FAULT");
    clear_stop_for_testing();
  }
  static void set(const char* spec) { setenv("SMOE_FAULT", spec, 1); }
};

TEST_F(Fault, FiresAtItsPointOnItsRankOnly) {
  inject_stage_fault("base", 0);  // unset: nothing
  set("stage:cluster:1");
  inject_stage_fault("cluster", 0);
  inject_stage_fault("base", 1);
  inject_stage_fault("cluster-done", 1);
  EXPECT_ERROR(inject_stage_fault("cluster", 1),
               "injected fault in stage cluster on rank 1 (SMOE_FAULT=stage:cluster:1)");
  set("stage:recorded-expert/002");  // every rank; a run.json key as the point
  inject_stage_fault("recorded-expert/001", 0);
  EXPECT_ERROR(inject_stage_fault("recorded-expert/002", 0), "injected fault in stage recorded-expert/002 on rank 0");
  set("expert:3");
  inject_stage_fault("3", 0);  // an expert fault is not a stage point
  inject_expert_fault(2);
  EXPECT_ERROR(inject_expert_fault(3), "injected fault while training expert 3 (SMOE_FAULT=expert:3)");
}

TEST_F(Fault, AMistypedSpecIsAnErrorAtTheFirstPoint) {
  for (const char* spec : {"kil:base-epoch-2", "kill", "kill:base:1:2"}) {
    set(spec);
    EXPECT_ERROR(inject_stage_fault("embed", 0),
                 std::string("SMOE_FAULT=") + spec + ": expected ACTION:POINT[:RANK] with ACTION one of");
  }
}

// The waiting rank says it waits (the stall inspector does not take it for
// stuck work), and goes on once the signal's flag is up — set here as the
// handler would, after the wait has begun.
TEST_F(Fault, WaitHoldsTheRankUntilAStopSignalArrives) {
  set("wait:base-epoch-2:0");
  inject_stage_fault("base-epoch-2", 1);  // another rank: no wait
  std::atomic<bool> returned{false};
  testing::within_hang_bound("a wait released by a stop signal", [&] {
    std::thread waiter([&] {
      inject_stage_fault("base-epoch-2", 0);
      returned = true;
    });
    while (!heartbeat::status().waiting) std::this_thread::yield();
    EXPECT_FALSE(returned.load());
    request_stop_for_testing(SIGUSR1);
    waiter.join();
  });
  EXPECT_TRUE(returned.load());
  EXPECT_TRUE(stop_requested());  // the training loop then stops at its next step
  EXPECT_NE(heartbeat::status().activity.find("a stop signal at base-epoch-2"), std::string::npos)
      << heartbeat::status().activity;
}

}  // namespace
}  // namespace smoe::pipeline
