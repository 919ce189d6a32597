// `smoe table`: finished runs tabulated as mean ± std over seeds. Each run
// folder gives its resolved config (config.yaml) and its report.json; runs
// whose configs differ only in ignored keys (the seed, runtime.*, data.path)
// form one cell, labelled by the keys that vary across the runs given. The
// metrics are report.json's numeric leaves named "accuracy" (base.accuracy,
// moe.bagging.accuracy, mixture.accuracy, finetuned.mixture.accuracy, ...)
// unless chosen by path. A key absent from an older run's config.yaml counts
// as its default (what the run ran with). Torch-free.
#pragma once

#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace smoe::eval {

struct RunRow {
  std::string dir;
  std::map<std::string, std::string> config;  // flattened keys -> YAML text of the value
  std::map<std::string, double> metrics;      // report.json paths -> value
};

// The value at `path` in a report: keys separated by dots, an array element
// by its index (anytime.3.accuracy) or by a field's value
// (anytime[tau=0.5].accuracy); nullptr when absent.
const nlohmann::json* report_value(const nlohmann::json& report, const std::string& path);

// Reads one finished run folder (config.yaml and report.json); fails naming the file.
// defaults: every config key at its default, flattened (flat_yaml of the
// default config's YAML): a key added to smoe after the run was made ran at
// its default.
RunRow read_run(const std::string& dir, const std::vector<std::string>& metric_paths = {},
                const std::map<std::string, std::string>& defaults = {});
// The run folders under `path`: itself when it holds a report.json, else its
// sub-folders that do (sorted by name, numbers in numeric order:
// experts.count-2 before experts.count-10); fails when there are none.
std::vector<std::string> find_runs(const std::string& path);

struct TableCell {
  std::vector<std::string> values;  // of the varied keys
  std::vector<std::string> dirs;
  std::map<std::string, std::vector<double>> metrics;
};

struct RunTable {
  std::vector<std::string> varied;   // config keys that differ across the runs
  std::vector<std::string> metrics;  // columns, in order
  std::vector<TableCell> cells;      // in the order their first run was given
};

// Groups runs by every config key but the ignored ones (a key or a prefix
// ending in '.'). Metric columns in `order` when given, else sorted.
RunTable make_table(const std::vector<RunRow>& runs, const std::vector<std::string>& order = {},
                    const std::vector<std::string>& ignored = {"seed", "runtime.", "data.path"});
// Mean (0 for none) and sample standard deviation (0 below two values).
double mean(const std::vector<double>& v);
double stdev(const std::vector<double>& v);
// "0.8512 ± 0.0071" (sample standard deviation), "0.8512" for one value, "—" for none.
std::string mean_std(const std::vector<double>& v);
std::string to_markdown(const RunTable& t);
// One row per cell: the varied keys, n, then mean and std of each metric.
std::string to_csv(const RunTable& t);

}  // namespace smoe::eval
