#include <gtest/gtest.h>

#include <iostream>
#include <random>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "comm/thread_communicator.h"
#include "common/expect_error.h"
#include "pipeline/scheduler.h"
#include "pipeline/stall_inspector.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

class Farm : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(Farm, EveryTaskRunsExactlyOnceAndIsRecorded) {
  auto [ranks, tasks] = GetParam();
  std::mutex mu;
  std::multiset<int64_t> ran;
  std::map<int64_t, int> recorded;
  std::set<int> workers;
  std::vector<int64_t> ids;
  for (int64_t t = 0; t < tasks; ++t) ids.push_back(t);
  comm::run_ranks(ranks, [&](comm::Communicator& c) {
    run_tasks(
        c, ids,
        [&](int64_t t) {
          std::this_thread::sleep_for(std::chrono::milliseconds(t % 3 == 0 ? 20 : 2));  // uneven costs
          std::lock_guard<std::mutex> lock(mu);
          ran.insert(t);
          workers.insert(c.rank());
          return json{{"task", t}, {"rank", c.rank()}};
        },
        [&](int64_t t, int rank, const json& r) {
          EXPECT_EQ(r["task"], t);
          EXPECT_EQ(r["rank"], rank);
          std::lock_guard<std::mutex> lock(mu);
          recorded[t] = rank;
        });
  });
  EXPECT_EQ(ran.size(), static_cast<size_t>(tasks));
  for (int64_t t = 0; t < tasks; ++t) {
    EXPECT_EQ(ran.count(t), 1u) << t;
    EXPECT_TRUE(recorded.count(t)) << t;
  }
  if (tasks >= 4 * ranks) {
    EXPECT_EQ(workers.size(), static_cast<size_t>(ranks));  // the coordinator works too
  }
}

INSTANTIATE_TEST_SUITE_P(RanksAndTasks, Farm,
                         ::testing::Values(std::make_tuple(1, 5), std::make_tuple(2, 9), std::make_tuple(3, 20),
                                           std::make_tuple(4, 2), std::make_tuple(3, 0)));

TEST(Farm, AFailingTaskEndsEveryRankWithItsError) {
  auto start = std::chrono::steady_clock::now();
  EXPECT_ERROR(comm::run_ranks(3,
                               [](comm::Communicator& c) {
                                 run_tasks(
                                     c, {0, 1, 2, 3, 4, 5},
                                     [](int64_t t) -> json {
                                       if (t == 4) fail("task {} failed", t);
                                       std::this_thread::sleep_for(std::chrono::milliseconds(10));
                                       return json{{"ok", true}};
                                     },
                                     [](int64_t, int, const json&) {});
                               }),
               "task 4 failed");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
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
  auto done = std::async(std::launch::async, [] {
    try {
      comm::run_ranks(2, [](comm::Communicator& c) {
        run_tasks(
            c, {0, 1, 2, 3},
            [](int64_t t) {
              std::this_thread::sleep_for(std::chrono::milliseconds(5));
              return json{{"ok", true}};
            },
            [](int64_t t, int, const json&) { fail("cannot write run.json while recording task {}", t); });
      });
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  if (done.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "run_tasks hangs when the scheduler fails";
    std::_Exit(1);  // the ranks' threads cannot be joined
  }
  EXPECT_NE(done.get().find("cannot write run.json while recording task"), std::string::npos);
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

// The inspector threads of two ranks: rank 1 stops making progress; rank 0's
// inspector aborts with rank 1's status within about the timeout.
TEST(StallInspector, AStuckRankEndsTheJobWithinTheTimeout) {
  std::mutex mu;
  std::string verdict;
  std::atomic<bool> spoken{false};
  auto start = std::chrono::steady_clock::now();
  comm::run_ranks(2, [&](comm::Communicator& c) {
    auto began = std::chrono::steady_clock::now();
    auto my_status = [&, rank = c.rank()] {
      const double since = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
      return rank == 1 ? status(since, false, "gate", "stuck on purpose") : status(0.01, false, "gate", "working");
    };
    {
      StallInspector inspector(c, {0.3, 0.05}, my_status, [&](const std::string& why) {
        std::lock_guard<std::mutex> lock(mu);
        verdict = why;
        spoken = true;
      });
      // Both ranks live until rank 0's inspector has spoken (or 5 s).
      for (int i = 0; i < 100 && !spoken; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
  EXPECT_NE(verdict.find("stall: rank 1 made no progress for"), std::string::npos) << verdict;
  EXPECT_NE(verdict.find("in stage gate (last: stuck on purpose)"), std::string::npos) << verdict;
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
