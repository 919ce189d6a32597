#include "pipeline/sweep.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <filesystem>
#include <functional>

#include "core/atomic_file.h"
#include "core/error.h"
#include "pipeline/run_dir.h"
#include "pipeline/stage.h"

namespace fs = std::filesystem;

namespace smoe::pipeline {
namespace {

std::string scalar_text(const YAML::Node& n) {
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

// A folder name from key=value pairs: "experts.count-4_seed-1".
std::string folder_name(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string out;
  for (const auto& [k, v] : kv) {
    if (!out.empty()) out += "_";
    out += k + "-";
    for (char c : v) out += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ? c : '+';
  }
  return out;
}

}  // namespace

Sweep load_sweep(const std::string& path) {
  SMOE_CHECK(fs::is_regular_file(path), "sweep file {} does not exist", path);
  YAML::Node root;
  try {
    root = YAML::Load(read_file(path));
  } catch (const YAML::Exception& e) {
    fail("{}: invalid YAML at line {}: {}", path, e.mark.line + 1, e.msg);
  }
  SMOE_CHECK(root.IsMap(), "{}: expected a mapping with config, grid and seeds", path);
  for (const auto& kv : root) {
    const std::string k = kv.first.as<std::string>();
    SMOE_CHECK(k == "config" || k == "set" || k == "grid" || k == "seeds",
               "{}: unknown key '{}' (expected config, set, grid, seeds)", path, k);
  }
  Sweep s;
  SMOE_CHECK(root["config"] && root["config"].IsScalar(), "{}: 'config' (the base config file) is missing", path);
  s.config_path = (fs::path(path).parent_path() / root["config"].as<std::string>()).lexically_normal().string();
  std::vector<std::string> common;
  if (root["set"]) {
    SMOE_CHECK(root["set"].IsSequence(), "{}: 'set' must be a list of key=value", path);
    for (const auto& n : root["set"]) common.push_back(n.as<std::string>());
  }
  std::vector<std::pair<std::string, std::vector<std::string>>> axes;
  if (root["grid"]) {
    SMOE_CHECK(root["grid"].IsMap(), "{}: 'grid' must map keys to lists of values", path);
    for (const auto& kv : root["grid"]) {
      const std::string key = kv.first.as<std::string>();
      SMOE_CHECK(kv.second.IsSequence() && kv.second.size() > 0, "{}: grid key '{}' needs a non-empty list of values",
                 path, key);
      std::vector<std::string> values;
      for (const auto& v : kv.second) values.push_back(scalar_text(v));
      axes.push_back({key, values});
    }
  }
  std::vector<int64_t> seeds{0};
  if (root["seeds"]) {
    SMOE_CHECK(root["seeds"].IsSequence() && root["seeds"].size() > 0, "{}: 'seeds' must be a non-empty list", path);
    seeds.clear();
    for (const auto& n : root["seeds"]) seeds.push_back(n.as<int64_t>());
  }
  // Every grid point (the last axis varying fastest), then every seed.
  std::vector<size_t> at(axes.size(), 0);
  while (true) {
    for (int64_t seed : seeds) {
      SweepRun r;
      std::vector<std::pair<std::string, std::string>> kv;
      for (size_t a = 0; a < axes.size(); ++a) kv.push_back({axes[a].first, axes[a].second[at[a]]});
      kv.push_back({"seed", std::to_string(seed)});
      r.name = folder_name(kv);
      r.sets = common;
      for (const auto& [k, v] : kv) r.sets.push_back(k + "=" + v);
      try {
        r.config = Config::load(s.config_path, r.sets);
      } catch (const Error& e) {
        fail("{}: run {}: {}", path, r.name, e.what());
      }
      s.runs.push_back(std::move(r));
    }
    size_t a = axes.size();
    while (a > 0 && ++at[a - 1] == axes[a - 1].second.size()) at[--a] = 0;
    if (a == 0) break;
  }
  return s;
}

SweepStart sweep_start(const Sweep& sweep, size_t index,
                       const std::function<bool(size_t, const std::string&)>& finished) {
  const Config& me = sweep.runs.at(index).config;
  const auto plan = scheme_plan(me);
  SweepStart best;
  size_t best_stage = 0;
  for (size_t j = 0; j < index; ++j) {
    const Config& other = sweep.runs[j].config;
    if (other.scheme != me.scheme) continue;
    // The first stage whose keys differ between the two configs.
    size_t first = plan.size();
    for (const auto& d : config_differences(other.to_yaml(false), me, plan.size()))
      first = std::min(first, first_stage_using(plan, d.substr(0, d.find(':'))));
    if (first == 0 || first <= best_stage) continue;
    // Every recorded stage before it must be finished in run j.
    bool reusable = true;
    for (size_t st = 0; st < first; ++st)
      if (plan[st].recorded && !finished(j, plan[st].name)) reusable = false;
    if (!reusable) continue;
    best_stage = first;
    best.from = static_cast<int>(j);
    best.redo_from = first < plan.size() ? plan[first].name : "";  // "": only the evaluation differs
  }
  return best;
}

}  // namespace smoe::pipeline
