// smoe sweep's plan (pipeline/sweep.h): the grid expanded into runs, and
// which earlier run each can start from.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"
#include "pipeline/quick_run.h"
#include "pipeline/stage.h"
#include "pipeline/sweep.h"

namespace smoe::pipeline {
namespace {

TEST(Sweep, TheGridTimesTheSeedsInOrderWithTheirOverrides) {
  testing::TempDir tmp;
  write_file_atomic(tmp / "s.yaml", "config: " + testing::source_dir() +
                                        "/configs/fmnist-quick.yaml\nset: [data.limit_train=600]\n"
                                        "grid:\n  experts.count: [2, 4]\n  ensembler.kind: [bagging, stacking]\n"
                                        "seeds: [0, 1]\n");
  const Sweep s = load_sweep(tmp / "s.yaml");
  ASSERT_EQ(s.runs.size(), 8u);
  EXPECT_EQ(s.runs[0].name, "experts.count-2_ensembler.kind-bagging_seed-0");
  EXPECT_EQ(s.runs[1].name, "experts.count-2_ensembler.kind-bagging_seed-1");
  EXPECT_EQ(s.runs[2].name, "experts.count-2_ensembler.kind-stacking_seed-0");
  EXPECT_EQ(s.runs[7].name, "experts.count-4_ensembler.kind-stacking_seed-1");
  EXPECT_EQ(s.runs[7].sets,
            (std::vector<std::string>{"data.limit_train=600", "experts.count=4", "ensembler.kind=stacking", "seed=1"}));
  EXPECT_EQ(s.runs[7].config.experts.count, 4);
  EXPECT_EQ(s.runs[7].config.data.limit_train, 600);
  EXPECT_EQ(s.runs[7].config.seed, 1);

  // Where each starts, when every earlier run finished every stage: a new
  // seed starts from nothing; another ensembler reuses everything before
  // the experts stage; another expert count, everything before the clusters.
  auto all_done = [](size_t, const std::string&) { return true; };
  EXPECT_EQ(sweep_start(s, 0, all_done).from, -1);
  EXPECT_EQ(sweep_start(s, 1, all_done).from, -1);
  const SweepStart stacking = sweep_start(s, 2, all_done);
  EXPECT_EQ(stacking.from, 0);
  EXPECT_EQ(stacking.redo_from, "experts");
  const SweepStart four = sweep_start(s, 4, all_done);
  EXPECT_EQ(four.from, 0);
  EXPECT_EQ(four.redo_from, "cluster");
  // An earlier run that has not finished its base stage cannot be reused.
  EXPECT_EQ(sweep_start(s, 2, [](size_t, const std::string& st) { return st != "base"; }).from, -1);
}

// Every sweep file shipped under configs/sweeps (the quick ones and the
// paper-size ones) expands, and each of its runs passes the config checks;
// in the Table 1 sweeps, runs that differ only in experts.depth share the
// base model (they start from the run with the other expert depth).
TEST(Sweep, EveryShippedSweepFileExpandsIntoValidRuns) {
  int files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(testing::source_dir() + "/configs/sweeps")) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    const Sweep s = load_sweep(e.path().string());
    EXPECT_GE(s.runs.size(), 3u);
    for (const auto& r : s.runs) EXPECT_NO_THROW(check_config(r.config)) << r.name;
    if (e.path().filename().string().find("table1") != std::string::npos) {
      auto all_done = [](size_t, const std::string&) { return true; };
      for (size_t i = 0; i < s.runs.size(); ++i)
        if (s.runs[i].name.find("experts.depth-18") != std::string::npos) {
          const SweepStart st = sweep_start(s, i, all_done);
          EXPECT_GE(st.from, 0) << s.runs[i].name;
          EXPECT_EQ(st.redo_from, "experts") << s.runs[i].name;
        }
    }
    ++files;
  }
  EXPECT_GE(files, 10);
}

TEST(Sweep, BadSweepFilesFailNamingTheFileAndTheKey) {
  testing::TempDir tmp;
  EXPECT_ERROR(load_sweep(tmp / "none.yaml"), "none.yaml does not exist");
  write_file_atomic(tmp / "a.yaml", "config: x.yaml\ngird: {seed: [1]}\n");
  EXPECT_ERROR(load_sweep(tmp / "a.yaml"), "a.yaml: unknown key 'gird' (expected config, set, grid, seeds)");
  write_file_atomic(tmp / "b.yaml", "grid: {experts.count: [2]}\n");
  EXPECT_ERROR(load_sweep(tmp / "b.yaml"), "b.yaml: 'config' (the base config file) is missing");
  write_file_atomic(tmp / "c.yaml", "config: " + testing::source_dir() +
                                        "/configs/fmnist-quick.yaml\n"
                                        "grid: {experts.count: []}\n");
  EXPECT_ERROR(load_sweep(tmp / "c.yaml"), "c.yaml: grid key 'experts.count' needs a non-empty list of values");
  write_file_atomic(tmp / "d.yaml", "config: " + testing::source_dir() +
                                        "/configs/fmnist-quick.yaml\n"
                                        "grid: {experts.count: [0]}\n");
  EXPECT_ERROR(load_sweep(tmp / "d.yaml"), "d.yaml: run experts.count-0_seed-0: config key 'experts.count'");
}

}  // namespace
}  // namespace smoe::pipeline
