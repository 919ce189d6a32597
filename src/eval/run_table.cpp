#include "eval/run_table.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace smoe::eval {
namespace {

// Numeric leaves named "accuracy", objects only (arrays such as the anytime
// grid or the per-expert list are not cells of a table), at most 3 deep.
void accuracies(const json& j, const std::string& prefix, int depth, std::map<std::string, double>& out) {
  if (!j.is_object() || depth > 3) return;
  for (const auto& [k, v] : j.items()) {
    const std::string path = prefix.empty() ? k : prefix + "." + k;
    if (k == "accuracy" && v.is_number()) out[path] = v.get<double>();
    if (v.is_object()) accuracies(v, path, depth + 1, out);
  }
}

bool ignored_key(const std::string& key, const std::vector<std::string>& ignored) {
  for (const auto& i : ignored)
    if (key == i || (!i.empty() && i.back() == '.' && key.rfind(i, 0) == 0)) return true;
  return false;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double stdev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

}  // namespace

RunRow read_run(const std::string& dir, const std::vector<std::string>& metric_paths) {
  RunRow r;
  r.dir = dir;
  const std::string config = (fs::path(dir) / "config.yaml").string(), report = (fs::path(dir) / "report.json").string();
  SMOE_CHECK(fs::is_regular_file(config), "{}: missing (not an smoe run folder?)", config);
  SMOE_CHECK(fs::is_regular_file(report), "{}: missing (the run has not finished its evaluation)", report);
  try {
    r.config = flat_yaml(read_file(config));
  } catch (const YAML::Exception& e) {
    fail("{}: invalid YAML at line {}: {}", config, e.mark.line + 1, e.msg);
  }
  // A key added to smoe after the run was made ran at its default.
  static const std::map<std::string, std::string> defaults = flat_yaml(Config::defaults().to_yaml(false));
  for (const auto& [k, v] : defaults) r.config.emplace(k, v);
  json j;
  try {
    j = json::parse(read_file(report));
  } catch (const json::exception& e) {
    fail("{}: invalid JSON ({})", report, e.what());
  }
  if (metric_paths.empty()) {
    accuracies(j, "", 0, r.metrics);
  } else {
    for (const auto& path : metric_paths) {
      const json* node = &j;
      std::stringstream ss(path);
      for (std::string part; std::getline(ss, part, '.') && node;)
        node = node->is_object() && node->contains(part) ? &(*node)[part] : nullptr;
      if (node && node->is_number()) r.metrics[path] = node->get<double>();
    }
  }
  return r;
}

std::vector<std::string> find_runs(const std::string& path) {
  SMOE_CHECK(fs::exists(path), "{} does not exist", path);
  if (fs::is_regular_file(fs::path(path) / "report.json")) return {path};
  SMOE_CHECK(fs::is_directory(path), "{} is not a folder", path);
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_directory() && fs::is_regular_file(e.path() / "report.json")) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  SMOE_CHECK(!out.empty(), "{}: no finished run folder (one holding a report.json) in it or under it", path);
  return out;
}

RunTable make_table(const std::vector<RunRow>& runs, const std::vector<std::string>& order,
                    const std::vector<std::string>& ignored) {
  RunTable t;
  SMOE_CHECK(!runs.empty(), "smoe table: no runs to tabulate");
  std::set<std::string> keys;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.config)
      if (!ignored_key(k, ignored)) keys.insert(k);
  for (const auto& k : keys) {
    auto value = [&](const RunRow& r) { return r.config.count(k) ? r.config.at(k) : std::string("(absent)"); };
    for (const auto& r : runs)
      if (value(r) != value(runs.front())) {
        t.varied.push_back(k);
        break;
      }
  }
  std::set<std::string> metrics;
  for (const auto& r : runs)
    for (const auto& [m, v] : r.metrics) metrics.insert(m);
  if (order.empty()) {
    t.metrics.assign(metrics.begin(), metrics.end());
  } else {
    for (const auto& m : order)
      if (metrics.count(m) && std::find(t.metrics.begin(), t.metrics.end(), m) == t.metrics.end()) t.metrics.push_back(m);
  }
  for (const auto& r : runs) {
    std::vector<std::string> values;
    for (const auto& k : t.varied) values.push_back(r.config.count(k) ? r.config.at(k) : "(absent)");
    auto it = std::find_if(t.cells.begin(), t.cells.end(), [&](const TableCell& c) { return c.values == values; });
    if (it == t.cells.end()) {
      t.cells.push_back({values, {}, {}});
      it = std::prev(t.cells.end());
    }
    it->dirs.push_back(r.dir);
    for (const auto& [m, v] : r.metrics) it->metrics[m].push_back(v);
  }
  return t;
}

std::string mean_std(const std::vector<double>& v) {
  if (v.empty()) return "—";
  if (v.size() == 1) return fmt::format("{:.4f}", v[0]);
  return fmt::format("{:.4f} ± {:.4f}", mean(v), stdev(v));
}

std::string to_markdown(const RunTable& t) {
  std::string out = "|";
  for (const auto& k : t.varied) out += " " + k + " |";
  out += " n |";
  for (const auto& m : t.metrics) out += " " + m + " |";
  out += "\n|";
  for (size_t i = 0; i < t.varied.size() + 1 + t.metrics.size(); ++i) out += "---|";
  out += "\n";
  for (const auto& c : t.cells) {
    out += "|";
    for (const auto& v : c.values) out += " " + v + " |";
    out += fmt::format(" {} |", c.dirs.size());
    for (const auto& m : t.metrics) out += " " + mean_std(c.metrics.count(m) ? c.metrics.at(m) : std::vector<double>{}) + " |";
    out += "\n";
  }
  return out;
}

std::string to_csv(const RunTable& t) {
  std::vector<std::string> head(t.varied);
  head.push_back("n");
  for (const auto& m : t.metrics) {
    head.push_back(m + " mean");
    head.push_back(m + " std");
  }
  std::string out;
  for (size_t i = 0; i < head.size(); ++i) out += (i ? "," : "") + csv_field(head[i]);
  out += "\n";
  for (const auto& c : t.cells) {
    std::vector<std::string> row(c.values);
    row.push_back(std::to_string(c.dirs.size()));
    for (const auto& m : t.metrics) {
      const auto it = c.metrics.find(m);
      row.push_back(it == c.metrics.end() ? "" : fmt::format("{:.6g}", mean(it->second)));
      row.push_back(it == c.metrics.end() ? "" : fmt::format("{:.6g}", stdev(it->second)));
    }
    for (size_t i = 0; i < row.size(); ++i) out += (i ? "," : "") + csv_field(row[i]);
    out += "\n";
  }
  return out;
}

}  // namespace smoe::eval
