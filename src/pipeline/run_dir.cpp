#include "pipeline/run_dir.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace smoe::pipeline {
namespace {

constexpr const char* kManifest = "run.json";
constexpr const char* kConfig = "config.yaml";

// Flattens a YAML mapping into dotted keys -> scalar text.
void flatten(const YAML::Node& n, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n)
      flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), out);
  } else {
    YAML::Emitter e;
    e << YAML::Flow << n;
    out[prefix] = e.c_str();
  }
}

bool is_empty_dir(const std::string& p) { return fs::is_directory(p) && fs::is_empty(p); }

}  // namespace

std::string expert_task_key(int64_t k, int64_t round) {
  return round == 0 ? fmt::format("expert/{:03d}", k) : fmt::format("em/{}/expert/{:03d}", round, k);
}

const std::vector<std::string>& stage_names() {
  static const std::vector<std::string> names = {"base", "embed", "cluster", "gate", "experts", "em"};
  return names;
}

size_t first_stage_using(const std::string& key) {
  auto starts = [&](const char* p) { return key.rfind(p, 0) == 0; };
  if (starts("eval.") || starts("runtime.") || key == "data.prefetch" || key == "data.storage" ||
      key == "data.memory_budget_mb" || key == "data.cache_mb")
    return stage_names().size();
  if (starts("cluster.") || key == "experts.count" || key == "gate.temperature" || key == "gate.hard") return 2;
  if (starts("gate.")) return 3;
  if (starts("experts.") || starts("ensembler.")) return 4;
  if (starts("em.")) return 5;
  return 0;  // seed, data, model, base
}

std::vector<std::string> config_differences(const std::string& saved_yaml, const Config& now, size_t allowed_from) {
  std::map<std::string, std::string> a, b;
  flatten(YAML::Load(saved_yaml), "", a);
  flatten(YAML::Load(now.to_yaml(false)), "", b);
  std::vector<std::string> diffs;
  for (const auto& [k, v] : b) {
    if (first_stage_using(k) >= std::min(allowed_from, stage_names().size())) continue;
    auto it = a.find(k);
    std::string old = it == a.end() ? "(absent)" : it->second;
    if (old != v) diffs.push_back(fmt::format("{}: {} -> {}", k, old, v));
  }
  return diffs;
}

RunDir RunDir::open_root(const std::string& path, const Config& config, OpenMode mode, const std::string& redo_from) {
  size_t from = stage_names().size();
  if (!redo_from.empty()) {
    SMOE_CHECK(mode == OpenMode::resume, "--redo-from needs --resume");
    auto it = std::find(stage_names().begin(), stage_names().end(), redo_from);
    SMOE_CHECK(it != stage_names().end(), "--redo-from '{}': expected one of {}", redo_from,
               fmt::join(stage_names(), ", "));
    from = static_cast<size_t>(it - stage_names().begin());
  }
  RunDir d;
  d.path_ = path;
  const std::string manifest_path = (fs::path(path) / kManifest).string();
  if (mode == OpenMode::resume) {
    SMOE_CHECK(fs::exists(manifest_path), "--resume: {} holds no smoe run (no {})", path, kManifest);
    try {
      d.manifest_ = json::parse(read_file(manifest_path));
    } catch (const json::parse_error& e) {
      fail("{}: invalid JSON ({})", manifest_path, e.what());
    }
    auto diffs = config_differences(d.saved_config_yaml(), config, from);
    SMOE_CHECK(diffs.empty(),
               "--resume: the config differs from the run's in {} (start a new run, use --force, "
               "or --redo-from the first stage it changes)",
               fmt::join(diffs, "; "));
    if (!redo_from.empty()) {
      // Forget the redone stages with their tasks ("expert/..." belong to
      // the experts stage, "em/..." to the em stage).
      std::vector<std::string> forget;
      for (const auto& [k, v] : d.manifest_["done"].items()) {
        const std::string owner = k.rfind("expert/", 0) == 0 ? "experts" : k.substr(0, k.find('/'));
        auto pos = std::find(stage_names().begin(), stage_names().end(), owner);
        if (pos != stage_names().end() && static_cast<size_t>(pos - stage_names().begin()) >= from) forget.push_back(k);
      }
      for (const auto& k : forget) d.manifest_["done"].erase(k);
    }
  } else {
    if (fs::exists(path) && !is_empty_dir(path)) {
      SMOE_CHECK(mode == OpenMode::force,
                 "run folder {} already exists (use --resume to continue it or --force to start over)", path);
      // Only remove what looks like a run folder.
      SMOE_CHECK(fs::exists(manifest_path) || fs::exists(fs::path(path) / kConfig),
                 "--force: {} is not an smoe run folder; refusing to delete it", path);
      fs::remove_all(path);
    }
    fs::create_directories(fs::path(path) / "experts");
    d.manifest_ = {{"format", "smoe-run"}, {"version", 1}, {"done", json::object()}};
  }
  fs::create_directories(fs::path(path) / "experts");
  write_file_atomic(d.file(kConfig), config.to_yaml());
  std::lock_guard<std::mutex> lock(d.mu_);
  d.save_locked();
  return d;
}

RunDir RunDir::attach(const std::string& path, const std::string& manifest_text) {
  RunDir d;
  d.path_ = path;
  d.manifest_ = json::parse(manifest_text);
  return d;
}

RunDir RunDir::existing(const std::string& path) {
  const std::string manifest_path = (fs::path(path) / kManifest).string();
  SMOE_CHECK(fs::exists(manifest_path), "{} holds no smoe run (no {})", path, kManifest);
  RunDir d;
  d.path_ = path;
  try {
    d.manifest_ = json::parse(read_file(manifest_path));
  } catch (const json::parse_error& e) {
    fail("{}: invalid JSON ({})", manifest_path, e.what());
  }
  return d;
}

RunDir::RunDir(RunDir&& o) noexcept : path_(std::move(o.path_)), manifest_(std::move(o.manifest_)) {}

RunDir& RunDir::operator=(RunDir&& o) noexcept {
  path_ = std::move(o.path_);
  manifest_ = std::move(o.manifest_);
  return *this;
}

std::string RunDir::file(const std::string& name) const { return (fs::path(path_) / name).string(); }

std::string RunDir::manifest_text() const {
  std::lock_guard<std::mutex> lock(mu_);
  return manifest_.dump();
}

bool RunDir::done(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return manifest_["done"].contains(key);
}

json RunDir::record(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  SMOE_ASSERT(manifest_["done"].contains(key), "no record '{}'", key);
  return manifest_["done"][key];
}

void RunDir::mark_done(const std::string& key, json record) {
  std::lock_guard<std::mutex> lock(mu_);
  manifest_["done"][key] = std::move(record);
  save_locked();
}

std::string RunDir::saved_config_yaml() const {
  const std::string p = file(kConfig);
  SMOE_CHECK(fs::exists(p), "{} is missing", p);
  return read_file(p);
}

void RunDir::save_locked() const { write_file_atomic(file(kManifest), manifest_.dump(2) + "\n"); }

}  // namespace smoe::pipeline
