#include <gtest/gtest.h>

#include <iostream>
#include <random>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "comm/thread_communicator.h"
#include "common/expect_error.h"
#include "common/hang_guard.h"
#include "pipeline/scheduler.h"
#include "pipeline/stall_inspector.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class Farm : public ::testing::TestWithParam<std::tuple<int, int>> {};

// Every worker's first task waits until min(ranks, tasks) workers hold
// one: a worker busy with a task cannot ask for another, so the first tasks
// go to distinct workers, the coordinator's among them, whatever the
// threads' speed. A scheduler that fed one worker only would hang here
// (caught by the hang bound).
TEST_P(Farm, EveryTaskRunsExactlyOnceAndIsRecorded) {
  auto [ranks, tasks] = GetParam();
  std::mutex mu;
  std::condition_variable all_busy;
  std::multiset<int64_t> ran;
  std::map<int64_t, int> recorded;
  std::set<int> workers;
  const size_t first_wave = static_cast<size_t>(std::min(ranks, tasks));
  std::vector<int64_t> ids;
  for (int64_t t = 0; t < tasks; ++t) ids.push_back(t);
  testing::within_hang_bound("run_tasks", [&] {
    comm::run_ranks(ranks, [&](comm::Communicator& c) {
      run_tasks(
          c, ids,
          [&](int64_t t) {
            std::unique_lock<std::mutex> lock(mu);
            ran.insert(t);
            if (workers.insert(c.rank()).second) {
              all_busy.notify_all();
              all_busy.wait(lock, [&] { return workers.size() >= first_wave; });
            }
            return json{{"task", t}, {"rank", c.rank()}};
          },
          [&](int64_t t, int rank, const json& r) {
            EXPECT_EQ(r["task"], t);
            EXPECT_EQ(r["rank"], rank);
            std::lock_guard<std::mutex> lock(mu);
            recorded[t] = rank;
          });
    });
  });
  EXPECT_EQ(ran.size(), static_cast<size_t>(tasks));
  for (int64_t t = 0; t < tasks; ++t) {
    EXPECT_EQ(ran.count(t), 1u) << t;
    EXPECT_TRUE(recorded.count(t)) << t;
  }
  EXPECT_EQ(workers.size(), first_wave);  // every rank works, the coordinator too
}

INSTANTIATE_TEST_SUITE_P(RanksAndTasks, Farm,
                         ::testing::Values(std::make_tuple(1, 5), std::make_tuple(2, 9), std::make_tuple(3, 20),
                                           std::make_tuple(4, 2), std::make_tuple(3, 0)));

// Every rank ends with the error instead of waiting for ever (the hang
// bound is the only clock here).
TEST(Farm, AFailingTaskEndsEveryRankWithItsError) {
  EXPECT_ERROR(testing::within_hang_bound("run_tasks with a failing task",
                                          [] {
                                            comm::run_ranks(3, [](comm::Communicator& c) {
                                              run_tasks(
                                                  c, {0, 1, 2, 3, 4, 5},
                                                  [](int64_t t) -> json {
                                                    if (t == 4) fail("task {} failed", t);
                                                    return json{{"ok", true}};
                                                  },
                                                  [](int64_t, int, const json&) {});
                                            });
                                          }),
               "task 4 failed");
}

// Tasks that wait for others (a sweep run that starts from an earlier run's
// folder): none starts before its prerequisite's result is recorded, workers
// that ask too early are served later, and every task still runs once.
TEST(Farm, ATaskStartsOnlyAfterItsPrerequisiteIsDone) {
  // 0 <- 1 <- 2 (a chain), 3 <- 4, 5 free; 7 waits for a task not in the list.
  const std::vector<int64_t> ids{0, 1, 2, 3, 4, 5, 6};
  const std::vector<int64_t> after{-1, 0, 1, -1, 3, -1, 99};
  for (int ranks : {1, 2, 3}) {
    std::mutex mu;
    std::set<int64_t> done;
    std::vector<std::string> violations;
    std::multiset<int64_t> ran;
    comm::run_ranks(ranks, [&](comm::Communicator& c) {
      run_tasks(
          c, ids, after,
          [&](int64_t t) {
            {
              std::lock_guard<std::mutex> lock(mu);
              const int64_t pre = after[static_cast<size_t>(t)];
              if (pre >= 0 && pre < 7 && !done.count(pre)) violations.push_back(fmt::format("{} before {}", t, pre));
              ran.insert(t);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(t == 0 ? 30 : 3));
            return json{{"ok", true}};
          },
          [&](int64_t t, int, const json&) {
            std::lock_guard<std::mutex> lock(mu);
            done.insert(t);
          });
    });
    EXPECT_TRUE(violations.empty()) << ranks << " ranks: " << violations.front();
    EXPECT_EQ(ran.size(), ids.size()) << ranks << " ranks";
    EXPECT_EQ(done.size(), ids.size()) << ranks << " ranks";
  }
}

// A result that says halt (a sweep run failed or was stopped) ends the
// hand-out: the tasks not yet handed out never run, and no rank waits.
TEST(Farm, AHaltingResultEndsTheHandOut) {
  std::atomic<int> ran{0};
  comm::run_ranks(2, [&](comm::Communicator& c) {
    run_tasks(
        c, {0, 1, 2, 3, 4, 5, 6, 7}, {-1, 0, 1, 2, 3, 4, 5, 6},  // a chain: one task at a time
        [&](int64_t t) {
          ++ran;
          return json{{"halt", t == 2}};
        },
        [](int64_t, int, const json&) {});
  });
  EXPECT_EQ(ran.load(), 3);
}

// The coordinator cannot record a result (run.json unwritable): its error
// ends every rank at once instead of leaving rank 0's worker and the other
// ranks waiting for replies for ever.
TEST(Farm, AFailureToRecordAResultEndsEveryRank) {
  const std::string error = testing::within_hang_bound("run_tasks when the scheduler fails", [] {
    try {
      comm::run_ranks(2, [](comm::Communicator& c) {
        run_tasks(
            c, {0, 1, 2, 3},
            [](int64_t) {
              return json{{"ok", true}};
            },
            [](int64_t t, int, const json&) { fail("cannot write run.json while recording task {}", t); });
      });
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  EXPECT_NE(error.find("cannot write run.json while recording task"), std::string::npos) << error;
}

}  // namespace
}  // namespace smoe::pipeline

namespace smoe::pipeline {
namespace {

heartbeat::Status status(double idle, bool waiting, const char* stage = "experts", const char* what = "expert 1") {
  return {idle, waiting, stage, what};
}

// Rank 0's verdict from the ranks' statuses: a rank stuck in its own work, a
// rank gone silent, or every rank waiting on the others; a rank that waits
// while another works is fine.
TEST(StallInspector, VerdictNamesTheStalledRankItsStageAndItsLastActivity) {
  const std::vector<double> heard = {0, 1, 1};
  EXPECT_EQ(StallInspector::verdict({status(1, false), status(50, true), status(2, false)}, heard, 30), "");
  EXPECT_EQ(StallInspector::verdict({status(40, true), status(2, false), status(50, true)}, heard, 30), "");
  EXPECT_EQ(StallInspector::verdict(
                {status(40, true), status(45, false, "cluster", "k-means iteration"), status(1, false)}, heard, 30),
            "stall: rank 1 made no progress for 45 s in stage cluster (last: k-means iteration); aborting the job "
            "(runtime.stall_timeout_s = 30)");
  EXPECT_EQ(StallInspector::verdict({status(1, false), status(1, false), status(1, false)}, {0, 1, 31}, 30),
            "stall: rank 2 has sent no heartbeat for 31 s (last seen in stage experts: expert 1); aborting the job");
  EXPECT_EQ(StallInspector::verdict(
                {status(31, true, "em", "waiting for other ranks in allreduce"), status(40, true), status(33, true)},
                heard, 30),
            "stall: every rank has waited on the others for 31 s (rank 0 in stage em: waiting for other ranks in "
            "allreduce); aborting the job");
}

// The inspector threads of two ranks: rank 1 reports no progress for 1000 s
// (the timeout is 60 s); rank 0's inspector, from the heartbeats it
// receives, aborts naming rank 1 and its status. The statuses are fixed, not
// read off the clock, so the verdict does not depend on how fast the threads
// run; rank 1 is heard every 0.05 s, far inside the timeout, so it is never
// "silent" unless the machine stops for a minute.
TEST(StallInspector, AStuckRankEndsTheJobNamingItsStatus) {
  std::mutex mu;
  std::condition_variable cv;
  std::string verdict;
  testing::within_hang_bound("the stall inspector", [&] {
    comm::run_ranks(2, [&](comm::Communicator& c) {
      auto my_status = [rank = c.rank()] {
        return rank == 1 ? status(1000, false, "gate", "stuck on purpose") : status(0.01, false, "gate", "working");
      };
      StallInspector inspector(c, {60, 0.05}, my_status, [&](const std::string& why) {
        std::lock_guard<std::mutex> lock(mu);
        verdict = why;
        cv.notify_all();
      });
      // Both ranks live (and beat) until rank 0's inspector has spoken.
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !verdict.empty(); });
    });
  });
  EXPECT_EQ(verdict,
            "stall: rank 1 made no progress for 1000 s in stage gate (last: stuck on purpose); aborting the job "
            "(runtime.stall_timeout_s = 60)");
}

}  // namespace
}  // namespace smoe::pipeline

namespace smoe::pipeline {
namespace {

// Heterogeneous experts ordered by predicted costs that are off by up to
// about +-20 % (lognormal prediction error, sigma 0.1) from their true
// durations, themselves spread over two orders of magnitude: the
// simulated makespan stays within 5 % of the lower bound max(sum t / P,
// max t) for 16 to 1024 experts on 1 to 256 ranks.
TEST(CostAwareSchedule, MakespanWithinFivePercentOfTheBoundWithPredictedCosts) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> duration(0.0, 1.0), error(0.0, 0.1);
  double worst = 0;
  for (int64_t experts : {16, 64, 256, 1024})
    for (int ranks : {1, 4, 16, 64, 256}) {
      std::vector<double> truth, predicted;
      std::vector<int64_t> ids;
      for (int64_t k = 0; k < experts; ++k) {
        truth.push_back(duration(rng));
        predicted.push_back(truth.back() * error(rng));
        ids.push_back(k);
      }
      const double makespan = simulate_schedule(longest_first(ids, predicted), truth, ranks, 0.0);
      double sum = 0, longest = 0;
      for (double t : truth) sum += t, longest = std::max(longest, t);
      const double bound = std::max(sum / ranks, longest);
      worst = std::max(worst, makespan / bound);
      EXPECT_LE(makespan / bound, 1.05) << experts << " experts on " << ranks << " ranks";
    }
  std::cout << "worst makespan / lower bound: " << worst << "\n";
}

}  // namespace
}  // namespace smoe::pipeline
