// smoe scaling's arithmetic (pipeline/scaling_model.h) and its table from a
// study folder (pipeline/scaling_table.h), on made-up runs whose right
// answers are known; the study itself runs end to end in
// test_pipeline_e2e.py and in the Slurm test.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"
#include "pipeline/rank_use.h"
#include "pipeline/scaling_model.h"
#include "pipeline/scaling_table.h"

namespace smoe::pipeline {
namespace {

using nlohmann::json;

CollectiveModel free_collectives() { return {0.0, 0.0, "test"}; }

StageMeasure rows(int ranks, double seconds) {
  StageMeasure m;
  m.stage = "embed";
  m.ranks = ranks;
  m.seconds = seconds;
  return m;
}

// The figures: 20 experts on 8 ranks fill 20 of 24 slots.
TEST(ScalingModel, PackingEfficiencyOfWholeUnits) {
  EXPECT_DOUBLE_EQ(packing_efficiency(20, 8), 20.0 / 24);
  EXPECT_DOUBLE_EQ(packing_efficiency(20, 16), 0.625);
  EXPECT_DOUBLE_EQ(packing_efficiency(20, 32), 0.625);
  EXPECT_DOUBLE_EQ(packing_efficiency(20, 20), 1.0);
  EXPECT_DOUBLE_EQ(packing_efficiency(20, 1), 1.0);
  EXPECT_DOUBLE_EQ(packing_efficiency(3, 2), 0.75);
}

TEST(ScalingModel, CollectivesCostLatencyPlusBytesOverBandwidth) {
  const CollectiveModel c{1e-5, 1e-9, "test"};
  EXPECT_DOUBLE_EQ(c.cost(comm::Op::allreduce, 1e6, 4), 2 * 3 * (1e-5 + 0.25e6 * 1e-9));  // ring
  EXPECT_DOUBLE_EQ(c.cost(comm::Op::broadcast, 1e6, 8), 3 * (1e-5 + 1e6 * 1e-9));         // binomial tree
  EXPECT_DOUBLE_EQ(c.cost(comm::Op::allgather, 1e6, 4), 3 * 1e-5 + 0.75 * 1e6 * 1e-9);
  EXPECT_DOUBLE_EQ(c.cost(comm::Op::allreduce, 1e6, 1), 0.0);  // one rank moves nothing
  // The calls a stage made, on another rank count: 10 allreduces of 4 KB.
  comm::TrafficCounts calls;
  calls.ops[static_cast<size_t>(comm::Op::allreduce)].calls = 10;
  calls.ops[static_cast<size_t>(comm::Op::allreduce)].payload_bytes = 10 * 4000;
  EXPECT_DOUBLE_EQ(collective_seconds(calls, 2, 16, c), 10 * c.cost(comm::Op::allreduce, 4000, 16));
}

// Four experts of 4, 3, 2 and 1 s, a trunk cache of 2 s and 1 s of the
// stage that no rank count shortens: on two ranks the scheduler (longest
// first) ends after 5 s (4 + 1, 3 + 2).
TEST(ScalingModel, TheExpertsStageIsTheSchedulersMakespanPlusWhatDoesNotShrink) {
  StageMeasure m;
  m.stage = "experts";
  m.kind = WorkKind::tasks;
  m.ranks = 1;
  m.task_seconds = {4, 3, 2, 1};
  m.task_cost = {4, 3, 2, 1};
  m.units = 4;
  m.shared_seconds = 2;
  m.seconds = 1 + 2 + 10;
  const StageModel model = fit_stage({m}, free_collectives());
  EXPECT_DOUBLE_EQ(model.serial, 1);
  EXPECT_DOUBLE_EQ(model.seconds(1), 13);
  EXPECT_DOUBLE_EQ(model.seconds(2), 1 + 1 + 5);
  EXPECT_DOUBLE_EQ(model.seconds(4), 1 + 0.5 + 4);
  EXPECT_DOUBLE_EQ(model.seconds(64), 1 + 2.0 / 64 + 4);  // the longest expert bounds it
  // With a latency, each task costs a request and a reply.
  const StageModel slow = fit_stage({m}, {0.1, 0.0, "test"});
  EXPECT_NEAR(slow.seconds(2), 1 + 1 + 5 + 2 * 0.2, 1e-9);
}

// Amdahl: 10 s on one rank and 6 s on two are 2 s serial and 8 s shared.
TEST(ScalingModel, ARowsStageFitsItsSerialPartFromTwoRankCounts) {
  const StageModel two = fit_stage({rows(1, 10), rows(2, 6)}, free_collectives());
  EXPECT_NEAR(two.serial, 2, 1e-12);
  EXPECT_NEAR(two.parallel, 8, 1e-12);
  EXPECT_NEAR(two.seconds(8), 3, 1e-12);
  // Two ranks no faster than one (a stage every rank repeats): all serial.
  const StageModel flat = fit_stage({rows(1, 1.0), rows(2, 1.1)}, free_collectives());
  EXPECT_NEAR(flat.seconds(64), 1.05, 1e-12);
  // One run: nothing serial is known.
  EXPECT_NEAR(fit_stage({rows(1, 10)}, free_collectives()).seconds(2), 5, 1e-12);
  // Weak: each rank's share stays the same as the work grows with P, so two
  // rank counts cannot tell a serial part from a parallel one: their mean.
  const StageModel weak = fit_stage({rows(1, 10), rows(2, 12)}, free_collectives(), true);
  EXPECT_NEAR(weak.seconds(4), 11, 1e-12);
  // A fixed cost does not grow with the work: 2 s serial and 8 s shared,
  // ten times the work.
  StageModel more = two;
  more.work = 10;
  EXPECT_NEAR(more.seconds(1), 2 + 80, 1e-12);
  EXPECT_NEAR(more.seconds(8), 2 + 10, 1e-12);
}

// Three micro-batches per step: two ranks take two rounds, three or more one.
TEST(ScalingModel, AMicroBatchStageShrinksByWholeRounds) {
  StageMeasure m = rows(1, 9);
  m.stage = "base";
  m.kind = WorkKind::micro_batches;
  m.units = 3;
  const StageModel model = fit_stage({m}, free_collectives());
  EXPECT_NEAR(model.seconds(2), 6, 1e-12);
  EXPECT_NEAR(model.seconds(3), 3, 1e-12);
  EXPECT_NEAR(model.seconds(64), 3, 1e-12);
}

// A study folder as `smoe scaling` leaves it, made by hand.
class ScalingTable : public ::testing::Test {
 protected:
  void SetUp() override {
    write_file_atomic(tmp / "study.json",
                      json{{"format", "smoe-scaling"},
                           {"mode", "strong"},
                           {"ranks", {1, 2}},
                           {"stages", {"base", "experts"}},
                           {"collectives", {{"latency_s", 0.0}, {"seconds_per_byte", 0.0}, {"source", "test"}}}}
                          .dump());
    write_run(1, 12.0, 8.0, "aaaa");
    write_run(2, 7.0, 4.5, "aaaa");
  }
  void write_run(int P, double base_s, double experts_s, const std::string& expert_hash,
                 const std::string& progress_hash = "p") {
    const std::string dir = tmp / ("P" + std::to_string(P));
    std::filesystem::create_directories(dir);
    json sent = json::array();
    for (int r = 0; r < P; ++r) sent.push_back(1e6 * (r + 1) * (P - 1));
    const json comm = {{"ops", json::object()}, {"sent_bytes", sent}, {"recv_bytes", sent}, {"seconds", sent}};
    write_file_atomic(dir + "/report.json", json{{"ranks", P},
                                                 {"stages", {{"base", base_s}, {"experts", experts_s}}},
                                                 {"stage_comm", {{"base", comm}, {"experts", comm}}},
                                                 {"base", {{"accuracy", 0.9}}}}
                                                .dump());
    write_file_atomic(dir + "/run.json",
                      json{{"done",
                            {{"base", {{"sha256", "bbbb"}, {"micro_batches_per_step", 4}}},
                             {"base/progress", {{"sha256", progress_hash}}},
                             {"experts", json::object()},
                             {"expert/000", {{"seconds", experts_s / 2}, {"checkpoint_sha256", expert_hash}}},
                             {"expert/001", {{"seconds", experts_s / 2}, {"checkpoint_sha256", "cccc"}}}}}}
                          .dump());
  }
  smoe::testing::TempDir tmp;
};

// The table's rows are the runs' reports; speedup and efficiency against P = 1.
TEST_F(ScalingTable, RowsAreTheReportsTimesWithSpeedupEfficiencyAndTheBusiestRanksBytes) {
  const ScalingResult r = scaling_result(tmp.path(), CollectiveModel{}, {8});
  ASSERT_EQ(r.rows.size(), 6u);  // two stages x (P = 1, 2 measured, 8 predicted)
  EXPECT_EQ(r.rows[1].stage, "base");
  EXPECT_EQ(r.rows[1].ranks, 2);
  EXPECT_TRUE(r.rows[1].measured);
  EXPECT_DOUBLE_EQ(r.rows[1].seconds, 7.0);
  EXPECT_DOUBLE_EQ(r.rows[1].speedup, 12.0 / 7.0);
  EXPECT_DOUBLE_EQ(r.rows[1].efficiency, 12.0 / 7.0 / 2);
  EXPECT_DOUBLE_EQ(r.rows[1].sent_bytes, 2e6);  // rank 1's, the larger
  EXPECT_FALSE(r.rows[2].measured);
  EXPECT_EQ(r.rows[2].ranks, 8);
  // The experts' model at P = 2 from P = 1's tasks alone: 4 s a task, one each.
  EXPECT_EQ(r.rows[4].stage, "experts");
  EXPECT_DOUBLE_EQ(r.rows[4].predicted, 4.0);
  // Replayed with P = 2's own tasks (2.25 s each, one per rank).
  EXPECT_DOUBLE_EQ(r.rows[4].replayed, 2.25);
  EXPECT_LT(r.rows[1].replayed, 0);  // base has no tasks
  EXPECT_TRUE(r.problems.empty());
  ASSERT_EQ(r.checks.size(), 1u);
  EXPECT_NE(r.checks[0].find("hashes"), std::string::npos) << r.checks[0];
  // Two experts cannot fill 8 ranks, nor 4 micro-batches.
  ASSERT_EQ(r.warnings.size(), 2u);
  EXPECT_NE(r.warnings[1].find("experts: 2 tasks"), std::string::npos) << r.warnings[1];
  EXPECT_NE(scaling_csv(r).find("base,2,measured,7,"), std::string::npos) << scaling_csv(r);
}

// Predictions for another amount of work (a short study of a long config):
// every rank count, the measured ones too, times the factor.
TEST_F(ScalingTable, PredictionsForTenTimesTheWorkMeasured) {
  const ScalingResult r = scaling_result(tmp.path(), CollectiveModel{}, {8}, {{"experts", 10.0}});
  std::vector<std::pair<int, double>> experts;
  for (const auto& x : r.rows)
    if (x.stage == "experts" && !x.measured) experts.push_back({x.ranks, x.seconds});
  // Two tasks of 40 s: 80 s on one rank, 40 s on two or more.
  EXPECT_EQ(experts, (std::vector<std::pair<int, double>>{{1, 80.0}, {2, 40.0}, {8, 40.0}}));
  EXPECT_ERROR(scaling_result(tmp.path(), CollectiveModel{}, {8}, {{"nope", 10.0}}),
               "--work-scale nope: the study timed no stage 'nope' (base, experts)");
}

// A strong study whose runs computed different things fails; a stage's
// per-epoch resume point is no result and may differ.
TEST_F(ScalingTable, AStrongStudyWhoseRunsDifferFails) {
  write_run(2, 7.0, 4.5, "aaaa", "another progress");
  EXPECT_TRUE(scaling_result(tmp.path(), CollectiveModel{}, {}).problems.empty());
  write_run(2, 7.0, 4.5, "dddd");
  const ScalingResult r = scaling_result(tmp.path(), CollectiveModel{}, {});
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("expert/000.checkpoint_sha256"), std::string::npos) << r.problems[0];
  EXPECT_EQ(write_scaling_study(tmp.path(), CollectiveModel{}, {}), 1);
}

}  // namespace
}  // namespace smoe::pipeline
