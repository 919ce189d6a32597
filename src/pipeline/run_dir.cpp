#include "pipeline/run_dir.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include "core/atomic_file.h"
#include "core/error.h"
#include "pipeline/fault.h"
#include "pipeline/stage.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace smoe::pipeline {
namespace {

constexpr const char* kManifest = "run.json";
constexpr const char* kConfig = "config.yaml";

bool is_empty_dir(const std::string& p) { return fs::is_directory(p) && fs::is_empty(p); }

}  // namespace

std::string expert_task_key(int64_t k, int64_t round) {
  return round == 0 ? fmt::format("expert/{:03d}", k) : fmt::format("em/{}/expert/{:03d}", round, k);
}

std::vector<std::string> config_differences(const std::string& saved_yaml, const Config& now, size_t allowed_from) {
  const auto a = flat_yaml(saved_yaml), b = flat_yaml(now.to_yaml(false));
  // A key the saved config lacks was added to smoe after the run was made,
  // with a default that keeps the old behaviour: absent means that default.
  const auto defaults = flat_yaml(Config::defaults().to_yaml(false));
  const auto plan = scheme_plan(now);
  std::vector<std::string> diffs;
  for (const auto& [k, v] : b) {
    if (first_stage_using(plan, k) >= std::min(allowed_from, plan.size())) continue;
    auto it = a.find(k);
    std::string old = it != a.end() ? it->second : defaults.count(k) ? defaults.at(k) : "(absent)";
    if (old != v) diffs.push_back(fmt::format("{}: {} -> {}", k, old, v));
  }
  return diffs;
}

RunDir RunDir::open_root(const std::string& path, const Config& config, OpenMode mode, const std::string& redo_from) {
  const auto plan = scheme_plan(config);
  std::vector<std::string> names;
  for (const auto& st : plan)
    if (st.recorded) names.push_back(st.name);
  size_t from = plan.size();
  if (!redo_from.empty()) {
    SMOE_CHECK(mode == OpenMode::resume, "--redo-from needs --resume");
    SMOE_CHECK(std::find(names.begin(), names.end(), redo_from) != names.end(), "--redo-from '{}': expected one of {}",
               redo_from, fmt::join(names, ", "));
    for (size_t i = 0; i < plan.size(); ++i)
      if (plan[i].name == redo_from) from = i;
  }
  RunDir d;
  d.path_ = path;
  const std::string manifest_path = (fs::path(path) / kManifest).string();
  if (mode == OpenMode::resume) {
    SMOE_CHECK(fs::exists(manifest_path), "--resume: {} holds no smoe run (no {})", path, kManifest);
    try {
      d.manifest_ = json::parse(read_file(manifest_path));
    } catch (const json::exception& e) {
      fail("{}: invalid JSON ({})", manifest_path, e.what());
    }
    // A key whose first stage has recorded nothing yet (nor has any later
    // one) changed nothing that exists: the new value is simply used.
    size_t started = 0;
    for (const auto& [k, v] : d.manifest_["done"].items()) {
      const size_t owner = stage_owning(plan, k);
      if (owner < plan.size()) started = std::max(started, owner + 1);
    }
    auto diffs = config_differences(d.saved_config_yaml(), config, std::min(from, started));
    SMOE_CHECK(diffs.empty(),
               "--resume: the config differs from the run's in {} (start a new run, use --force, "
               "or --redo-from the first stage it changes)",
               fmt::join(diffs, "; "));
    if (!redo_from.empty()) {
      // Forget the redone stages with their tasks (each stage declares the
      // records it owns: "expert/..." belong to the experts stage).
      std::vector<std::string> forget;
      for (const auto& [k, v] : d.manifest_["done"].items()) {
        const size_t owner = stage_owning(plan, k);
        if (owner < plan.size() && owner >= from) forget.push_back(k);
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
  } catch (const json::exception& e) {
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    manifest_["done"][key] = std::move(record);
    save_locked();
  }
  inject_stage_fault("recorded-" + key, 0);  // SMOE_FAULT=killjob:recorded-KEY (only rank 0 records)
}

std::string RunDir::saved_config_yaml() const {
  const std::string p = file(kConfig);
  SMOE_CHECK(fs::exists(p), "{} is missing", p);
  return read_file(p);
}

void RunDir::save_locked() const { write_file_atomic(file(kManifest), manifest_.dump(2) + "\n"); }

void copy_finished_stages(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::remove_all(to, ec);
  if (fs::path(to).has_parent_path()) fs::create_directories(fs::path(to).parent_path());
  fs::copy(from, to, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(to)) {
    const std::string n = e.path().filename().string();
    if (n == "report.json" || n.rfind("log", 0) == 0 || e.path().extension() == ".png") fs::remove(e.path());
  }
}

bool wait_for_file(const std::string& path, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!fs::exists(path)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

}  // namespace smoe::pipeline
