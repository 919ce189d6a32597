#include "eval/run_table.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/options.h"

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

// Names with numbers in numeric order: experts.count-2 before experts.count-10.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      const std::string x = a.substr(i, ie - i), y = b.substr(j, je - j);
      if (i > 0 && j > 0 && a[i - 1] == '.' && b[j - 1] == '.') {  // a fraction's digits: 1.25 < 1.5
        if (x != y) return x < y;
        i = ie;
        j = je;
        continue;
      }
      const std::string xs = x.substr(std::min(x.find_first_not_of('0'), x.size())),
                        ys = y.substr(std::min(y.find_first_not_of('0'), y.size()));
      if (xs.size() != ys.size()) return xs.size() < ys.size();
      if (xs != ys) return xs < ys;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

}  // namespace

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

double stdev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

const nlohmann::json* report_value(const nlohmann::json& report, const std::string& path) {
  // Split on the dots outside brackets (a selector's value may hold one).
  std::vector<std::string> parts(1);
  int depth = 0;
  for (char c : path) {
    depth += c == '[' ? 1 : c == ']' ? -1 : 0;
    if (c == '.' && depth == 0)
      parts.emplace_back();
    else
      parts.back() += c;
  }
  const json* node = &report;
  for (const auto& part : parts) {
    std::string key = part, field, value;
    const size_t open = part.find('[');
    if (open != std::string::npos && part.back() == ']' && part.find('=', open) != std::string::npos) {
      key = part.substr(0, open);
      const std::string sel = part.substr(open + 1, part.size() - open - 2);
      field = sel.substr(0, sel.find('='));
      value = sel.substr(sel.find('=') + 1);
    }
    if (node->is_object() && node->contains(key)) {
      node = &(*node)[key];
    } else if (node->is_array() && !key.empty() && key.find_first_not_of("0123456789") == std::string::npos &&
               std::stoul(key) < node->size()) {
      node = &(*node)[std::stoul(key)];
    } else {
      return nullptr;
    }
    if (field.empty()) continue;
    if (!node->is_array()) return nullptr;
    const json* found = nullptr;
    for (const auto& e : *node) {
      if (!e.is_object() || !e.contains(field)) continue;
      const json& f = e[field];
      char* end = nullptr;
      const double want = std::strtod(value.c_str(), &end);
      const bool numeric = end && *end == '\0' && !value.empty();
      if ((f.is_number() && numeric && std::abs(f.get<double>() - want) <= 1e-9 * std::max(1.0, std::abs(want))) ||
          (f.is_string() && f.get<std::string>() == value)) {
        found = &e;
        break;
      }
    }
    if (!found) return nullptr;
    node = found;
  }
  return node;
}

RunRow read_run(const std::string& dir, const std::vector<std::string>& metric_paths,
                const std::map<std::string, std::string>& defaults) {
  RunRow r;
  r.dir = dir;
  const std::string config = (fs::path(dir) / "config.yaml").string(),
                    report = (fs::path(dir) / "report.json").string();
  SMOE_CHECK(fs::is_regular_file(config), "{}: missing (not an smoe run folder?)", config);
  SMOE_CHECK(fs::is_regular_file(report), "{}: missing (the run has not finished its evaluation)", report);
  try {
    r.config = flat_yaml(read_file(config));
  } catch (const YAML::Exception& e) {
    fail("{}: invalid YAML at line {}: {}", config, e.mark.line + 1, e.msg);
  }
  // A key added to smoe after the run was made ran at its default.
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
      const json* node = report_value(j, path);
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
  std::sort(out.begin(), out.end(), natural_less);
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
      if (metrics.count(m) && std::find(t.metrics.begin(), t.metrics.end(), m) == t.metrics.end())
        t.metrics.push_back(m);
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
  // Counts such as MACs in k, M or G, with three decimals.
  const double m = mean(v), a = std::abs(m);
  double unit = 1;
  const char* suffix = "";
  if (a >= 1e9) {
    unit = 1e9, suffix = "G";
  } else if (a >= 1e6) {
    unit = 1e6, suffix = "M";
  } else if (a >= 1e4) {
    unit = 1e3, suffix = "k";
  }
  const int digits = unit == 1 ? 4 : 3;
  if (v.size() == 1) return fmt::format("{:.{}f}{}", m / unit, digits, suffix);
  return fmt::format("{:.{}f}{} ± {:.{}f}{}", m / unit, digits, suffix, stdev(v) / unit, digits, suffix);
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
    for (const auto& m : t.metrics)
      out += " " + mean_std(c.metrics.count(m) ? c.metrics.at(m) : std::vector<double>{}) + " |";
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
