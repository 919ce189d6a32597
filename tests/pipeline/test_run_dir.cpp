#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"
#include "pipeline/run_dir.h"
#include "pipeline/run_lock.h"

namespace fs = std::filesystem;

namespace smoe::pipeline {
namespace {

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
    redo.mark_done("cluster", {{"seconds", 1.0}});  // redone with the new count
  }
  EXPECT_ERROR(RunDir::open_root(tmp / "run", changed, OpenMode::resume, "gaet"),
               "--redo-from 'gaet': expected one of");
  // The redone run saved its new config: resuming it again needs that config.
  EXPECT_NO_THROW(RunDir::open_root(tmp / "run", changed, OpenMode::resume));
  EXPECT_ERROR(RunDir::open_root(tmp / "run", cfg, OpenMode::resume), "experts.count: 8 -> 4");

  // A key first used by a stage that has recorded nothing (nor has any
  // later one) may change on a plain resume: nothing made with it exists.
  {
    RunDir early = RunDir::open_root(tmp / "early", cfg, OpenMode::fresh);
    early.mark_done("base", {{"seconds", 1.0}});
  }
  Config later = cfg;
  later.experts.gamma = 0.3;  // first used by the experts stage, not started
  EXPECT_NO_THROW(RunDir::open_root(tmp / "early", later, OpenMode::resume));
  EXPECT_NO_THROW(RunDir::open_root(tmp / "early", later, OpenMode::resume));  // saved as the run's config
  Config earlier = later;
  earlier.base.optim.lr = 0.5;  // the base stage finished with the old value
  EXPECT_ERROR(RunDir::open_root(tmp / "early", earlier, OpenMode::resume), "base.lr: 0.1 -> 0.5");

  RunDir forced = RunDir::open_root(tmp / "run", cfg, OpenMode::force);
  EXPECT_FALSE(forced.done("base"));
  EXPECT_ERROR(RunDir::open_root(tmp / "nothing", cfg, OpenMode::resume), "holds no smoe run (no run.json)");
  fs::create_directories(tmp / "mine");
  write_file_atomic(tmp / "mine/thesis.tex", "precious");
  EXPECT_ERROR(RunDir::open_root(tmp / "mine", cfg, OpenMode::force),
               "is not an smoe run folder; refusing to delete it");
  EXPECT_TRUE(fs::exists(tmp / "mine/thesis.tex"));
}

// One job per run folder: a second lock on the same folder fails naming the
// holder; once released (or its process dead: flock) the next one takes it.
TEST(RunLock, ASecondJobOnTheSameFolderStopsNamingTheFirst) {
  testing::TempDir tmp;
  const std::string run = tmp / "run";
  {
    RunLock first = RunLock::acquire(run);
    EXPECT_EQ(first.path(), run + ".lock");
    EXPECT_ERROR(RunLock::acquire(run + "/"), "run folder " + run + "/ is in use by host ");
    EXPECT_ERROR(RunLock::acquire(run), fmt::format("pid {}", getpid()));
  }
  RunLock again = RunLock::acquire(run);  // released with its owner
  EXPECT_FALSE(fs::exists(run)) << "the lock lives beside the run folder, not in it";
}

}  // namespace
}  // namespace smoe::pipeline
