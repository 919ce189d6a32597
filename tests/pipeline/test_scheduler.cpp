#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "comm/thread_communicator.h"
#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"
#include "pipeline/run_dir.h"
#include "pipeline/scheduler.h"

namespace fs = std::filesystem;
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
  if (tasks >= 4 * ranks) EXPECT_EQ(workers.size(), static_cast<size_t>(ranks));  // the coordinator works too
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

TEST(RunDir, FreshRunsRefuseExistingFoldersResumeChecksTheConfig) {
  testing::TempDir tmp;
  Config cfg = Config::defaults();
  cfg.data.path = "/data/x";
  {
    RunDir d = RunDir::open_root(tmp / "run", cfg, OpenMode::fresh);
    d.mark_done("base", {{"seconds", 1.5}});
    d.mark_done("cluster", {{"seconds", 1.0}});
    d.mark_done("expert/000", {{"sha", "abc"}});
  }
  EXPECT_ERROR(
      RunDir::open_root(tmp / "run", cfg, OpenMode::fresh),
      "run folder " + (tmp / "run") + " already exists (use --resume to continue it or --force to start over)");
  RunDir resumed = RunDir::open_root(tmp / "run", cfg, OpenMode::resume);
  EXPECT_TRUE(resumed.done("base"));
  EXPECT_EQ(resumed.record("expert/000")["sha"], "abc");
  EXPECT_FALSE(resumed.done("gate"));

  Config changed = cfg;
  changed.experts.count = 8;
  changed.eval.taus = {0.5};  // eval keys may change
  EXPECT_ERROR(RunDir::open_root(tmp / "run", changed, OpenMode::resume),
               "--resume: the config differs from the run's in experts.count: 4 -> 8");
  // Redoing from the stage that first uses the key allows the change and forgets what follows.
  changed.experts.gamma = 0.3;
  EXPECT_ERROR(RunDir::open_root(tmp / "run", changed, OpenMode::resume, "experts"),
               "differs from the run's in experts.count: 4 -> 8");
  {
    RunDir redo = RunDir::open_root(tmp / "run", changed, OpenMode::resume, "cluster");
    EXPECT_TRUE(redo.done("base"));
    EXPECT_FALSE(redo.done("expert/000"));
  }
  EXPECT_ERROR(RunDir::open_root(tmp / "run", changed, OpenMode::resume, "gaet"),
               "--redo-from 'gaet': expected one of");
  // The redone run saved its new config: resuming it again needs that config.
  EXPECT_NO_THROW(RunDir::open_root(tmp / "run", changed, OpenMode::resume));
  EXPECT_ERROR(RunDir::open_root(tmp / "run", cfg, OpenMode::resume), "experts.count: 8 -> 4");

  RunDir forced = RunDir::open_root(tmp / "run", cfg, OpenMode::force);
  EXPECT_FALSE(forced.done("base"));
  EXPECT_ERROR(RunDir::open_root(tmp / "nothing", cfg, OpenMode::resume), "holds no smoe run (no run.json)");
  fs::create_directories(tmp / "mine");
  write_file_atomic(tmp / "mine/thesis.tex", "precious");
  EXPECT_ERROR(RunDir::open_root(tmp / "mine", cfg, OpenMode::force),
               "is not an smoe run folder; refusing to delete it");
  EXPECT_TRUE(fs::exists(tmp / "mine/thesis.tex"));
}

}  // namespace
}  // namespace smoe::pipeline
