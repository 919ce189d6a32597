// smoe table (eval/run_table.h): runs grouped by their configs minus the
// seed, mean ± std per cell, on run folders the test writes.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>
#include "common/expect_error.h"
#include "common/temp_dir.h"
#include "core/atomic_file.h"

#include "eval/run_plot.h"
#include "eval/run_table.h"

namespace smoe::eval {
namespace {

void write_run(const std::string& dir, int seed, int experts, double bagging, double base) {
  std::filesystem::create_directories(dir);
  write_file_atomic(dir + "/config.yaml", "seed: " + std::to_string(seed) +
                                              "\nexperts:\n  count: " + std::to_string(experts) +
                                              "\nruntime:\n  threads: " + std::to_string(seed + 1) + "\n");
  write_file_atomic(dir + "/report.json",
                    "{\"base\": {\"accuracy\": " + std::to_string(base) +
                        ", \"macs\": 10},"
                        " \"moe\": {\"bagging\": {\"accuracy\": " +
                        std::to_string(bagging) +
                        ", \"macs\": 42}},"
                        " \"anytime\": [{\"accuracy\": 0.5}], \"experts\": [{\"accuracy\": 0.1}]}\n");
}

TEST(RunTable, GroupsBySeedlessConfigAndGivesMeanAndSampleStd) {
  testing::TempDir tmp;
  write_run(tmp / "sweep/a-s0", 0, 4, 0.80, 0.70);
  write_run(tmp / "sweep/a-s1", 1, 4, 0.90, 0.72);
  write_run(tmp / "sweep/b-s0", 0, 8, 0.85, 0.70);
  std::filesystem::create_directories(tmp / "sweep/unfinished");  // no report.json: not a run yet
  std::vector<RunRow> runs;
  for (const auto& d : find_runs(tmp / "sweep")) runs.push_back(read_run(d, {}, {{"gate.temperature", "0.1"}}));
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].metrics.count("anytime.accuracy"), 0u);  // arrays are not cells
  const RunTable t = make_table(runs);
  // seed and runtime.* vary but are ignored; experts.count is the cell.
  EXPECT_EQ(t.varied, (std::vector<std::string>{"experts.count"}));
  EXPECT_EQ(t.metrics, (std::vector<std::string>{"base.accuracy", "moe.bagging.accuracy"}));
  ASSERT_EQ(t.cells.size(), 2u);
  EXPECT_EQ(t.cells[0].values, (std::vector<std::string>{"4"}));
  EXPECT_EQ(t.cells[0].dirs.size(), 2u);
  // mean 0.85, sample std sqrt(((0.05)^2 * 2) / 1) = 0.0707
  EXPECT_EQ(mean_std(t.cells[0].metrics.at("moe.bagging.accuracy")), "0.8500 ± 0.0707");
  EXPECT_EQ(to_markdown(t),
            "| experts.count | n | base.accuracy | moe.bagging.accuracy |\n"
            "|---|---|---|---|\n"
            "| 4 | 2 | 0.7100 ± 0.0141 | 0.8500 ± 0.0707 |\n"
            "| 8 | 1 | 0.7000 | 0.8500 |\n");
  EXPECT_EQ(to_csv(t),
            "experts.count,n,base.accuracy mean,base.accuracy std,moe.bagging.accuracy mean,moe.bagging.accuracy std\n"
            "4,2,0.71,0.0141421,0.85,0.0707107\n"
            "8,1,0.7,0,0.85,0\n");
  // Chosen metrics, in the order given.
  const RunRow macs = read_run(tmp / "sweep/a-s0", {"moe.bagging.macs", "base.macs", "no.such.path"});
  EXPECT_EQ(macs.metrics, (std::map<std::string, double>{{"moe.bagging.macs", 42}, {"base.macs", 10}}));
  EXPECT_EQ(make_table({macs}, {"moe.bagging.macs", "base.macs"}).metrics,
            (std::vector<std::string>{"moe.bagging.macs", "base.macs"}));
  // A key the run's config.yaml lacks counts as its default.
  EXPECT_EQ(runs[0].config.at("gate.temperature"), "0.1");
}

// Metric paths reach into arrays: by index, or by a field's value (the
// anytime grid's tau); absent elements give no value.
TEST(RunTable, MetricPathsSelectArrayElementsByIndexOrField) {
  const auto j = nlohmann::json::parse(
      R"({"anytime": [{"tau": 0.0, "accuracy": 0.9, "macs": 5e6}, {"tau": 0.5, "accuracy": 0.8, "macs": 3e6}],
          "moe": {"bagging": {"accuracy": 0.85}}, "em": [{"kind": "round", "q": 2}]})");
  auto value = [&](const std::string& p) {
    const nlohmann::json* v = report_value(j, p);
    return v && v->is_number() ? v->get<double>() : -1.0;
  };
  EXPECT_EQ(value("anytime.1.accuracy"), 0.8);
  EXPECT_EQ(value("anytime[tau=0.5].macs"), 3e6);
  EXPECT_EQ(value("anytime[tau=0].accuracy"), 0.9);
  EXPECT_EQ(value("em[kind=round].q"), 2);
  EXPECT_EQ(value("moe.bagging.accuracy"), 0.85);
  EXPECT_EQ(value("anytime[tau=0.3].accuracy"), -1);
  EXPECT_EQ(value("anytime.7.accuracy"), -1);
  EXPECT_EQ(value("moe.top2.accuracy"), -1);
}

// Counts such as MACs read in k, M and G; accuracies keep four decimals.
TEST(RunTable, LargeValuesAreScaled) {
  EXPECT_EQ(mean_std({3282688.0, 3282688.0}), "3.283M ± 0.000M");
  EXPECT_EQ(mean_std({2.64e9}), "2.640G");
  EXPECT_EQ(mean_std({12000, 14000}), "13.000k ± 1.414k");
  EXPECT_EQ(mean_std({0.5, 0.7}), "0.6000 ± 0.1414");
}

// A sweep's folders list in numeric order (experts.count-2 before -10,
// 0.25 before 0.5), and their plot is drawn.
TEST(RunTable, RunFoldersListInNumericOrderAndPlot) {
  testing::TempDir tmp;
  for (int k : {10, 2, 1}) write_run(tmp / ("s/experts.count-" + std::to_string(k) + "_seed-0"), 0, k, 0.8, 0.7);
  write_run(tmp / "g/gamma-0.5", 0, 4, 0.8, 0.7);
  write_run(tmp / "g/gamma-0.25", 0, 5, 0.8, 0.7);
  const auto dirs = find_runs(tmp / "s");
  ASSERT_EQ(dirs.size(), 3u);
  EXPECT_NE(dirs[0].find("count-1_"), std::string::npos);
  EXPECT_NE(dirs[1].find("count-2_"), std::string::npos);
  EXPECT_NE(dirs[2].find("count-10_"), std::string::npos);
  EXPECT_NE(find_runs(tmp / "g")[0].find("gamma-0.25"), std::string::npos);
  std::vector<RunRow> runs;
  for (const auto& d : dirs) runs.push_back(read_run(d));
  plot_table(make_table(runs), tmp / "plot.png", "test");
  EXPECT_GT(std::filesystem::file_size(tmp / "plot.png"), 1000u);
  std::vector<RunRow> none{runs[0]};
  write_file_atomic(dirs[0] + "/report.json", "{\"experts\": []}");
  none[0] = read_run(dirs[0]);
  EXPECT_ERROR(plot_table(make_table(none), tmp / "none.png", "t"),
               "none.png: the runs hold no accuracy with its MACs");
}

TEST(RunTable, BadRunFoldersFailNamingTheFile) {
  testing::TempDir tmp;
  EXPECT_ERROR(find_runs(tmp / "nowhere"), "nowhere does not exist");
  std::filesystem::create_directories(tmp / "empty");
  EXPECT_ERROR(find_runs(tmp / "empty"), "empty: no finished run folder (one holding a report.json)");
  write_run(tmp / "r", 0, 4, 0.8, 0.7);
  write_file_atomic(tmp / "r/report.json", "{\"base\": ");
  EXPECT_ERROR(read_run(tmp / "r"), "r/report.json: invalid JSON");
  write_file_atomic(tmp / "r/config.yaml", "experts: [unclosed");
  EXPECT_ERROR(read_run(tmp / "r"), "r/config.yaml: invalid YAML at line");
  std::filesystem::remove(tmp / "r/config.yaml");
  EXPECT_ERROR(read_run(tmp / "r"), "r/config.yaml: missing (not an smoe run folder?)");
}

}  // namespace
}  // namespace smoe::eval
