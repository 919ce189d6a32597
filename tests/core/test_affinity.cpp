#include <gtest/gtest.h>
#include <signal.h>

#include "core/affinity.h"
#include "core/stop.h"

namespace smoe {
namespace {

TEST(Affinity, ThreadsFollowTheConfigThenSlurmThenTheRanksCores) {
  // choose_threads(configured, SLURM_CPUS_PER_TASK, affinity cores, online cores, local ranks)
  EXPECT_EQ(choose_threads(3, 8, 2, 32, 2), 3);    // a config value is respected
  EXPECT_EQ(choose_threads(0, 8, 32, 32, 2), 8);   // inside Slurm: the task's cpus
  EXPECT_EQ(choose_threads(0, 0, 4, 32, 2), 4);    // bound to 4 of 32 cores: those 4
  EXPECT_EQ(choose_threads(0, 0, 32, 32, 2), 16);  // unbound: the node's cores shared
  EXPECT_EQ(choose_threads(0, 0, 2, 2, 3), 1);     // never 0
}

TEST(Affinity, TheMaskIsReadAndPrintedAsRanges) {
  EXPECT_FALSE(affinity_cpus().empty());
  EXPECT_EQ(cpu_list({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(cpu_list({5}), "5");
  EXPECT_EQ(cpu_list({}), "");
}

TEST(Stop, SignalsOnlySetTheFlagInsideAScope) {
  clear_stop_for_testing();
  {
    StopScope scope;
    EXPECT_FALSE(stop_requested());
    raise(SIGUSR1);  // would end the process without the scope
    EXPECT_TRUE(stop_requested());
    EXPECT_EQ(stop_signal(), SIGUSR1);
  }
  clear_stop_for_testing();
  EXPECT_FALSE(stop_requested());
}

}  // namespace
}  // namespace smoe
