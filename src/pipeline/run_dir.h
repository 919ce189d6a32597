// The run folder (docs/architecture.md, "The run folder"):
//
//   config.yaml          the resolved config
//   run.json             manifest of finished stages and tasks (atomic writes)
//   log.jsonl            rank 0's JSON-lines log (log.rank-N.jsonl for the others)
//   base.pt, embeddings.f32, cluster.pt, g0.f32, assign.f32, gate.pt
//   experts/expert-NNN.pt, experts/stacking-NNN.pt, em-R/ (model_store.h)
//   report.json, anytime.csv, accuracy_vs_macs.png, routing.png
//
// Only rank 0 writes run.json; every rank gets the same view of it at start.
// A run folder is never overwritten without --resume or --force.
#pragma once

#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "pipeline/config.h"

namespace smoe::pipeline {

enum class OpenMode { fresh, resume, force };

class RunDir {
 public:
  // Rank 0 checks and prepares the folder (fresh: must not exist or be
  // empty; resume: must hold a run whose results-relevant config keys equal
  // `config`'s; force: emptied first) and writes config.yaml and run.json.
  // Errors name the folder and what to do.
  // With `redo_from` (resume only), keys used by that stage and later ones may
  // change too, and those stages are forgotten.
  static RunDir open_root(const std::string& path, const Config& config, OpenMode mode,
                          const std::string& redo_from = "");
  // Other ranks (and `smoe eval`): the manifest as rank 0 sent it.
  static RunDir attach(const std::string& path, const std::string& manifest_text);
  // An existing run for `smoe eval`: its config and manifest from disk.
  static RunDir existing(const std::string& path);

  RunDir() = default;
  RunDir(RunDir&& o) noexcept;
  RunDir& operator=(RunDir&& o) noexcept;

  const std::string& root() const { return path_; }
  std::string file(const std::string& name) const;

  std::string manifest_text() const;
  bool done(const std::string& key) const;
  nlohmann::json record(const std::string& key) const;
  // Records `key` as finished (rank 0 only; thread-safe; atomic on disk).
  void mark_done(const std::string& key, nlohmann::json record);

  // The config saved in the folder.
  std::string saved_config_yaml() const;

 private:
  void save_locked() const;

  std::string path_;
  nlohmann::json manifest_;
  mutable std::mutex mu_;
};

// run.json key of expert task k of a round (0: the experts stage, r: EM round r).
std::string expert_task_key(int64_t k, int64_t round);

// Differences between two resolved configs ("key: old -> new"), ignoring
// keys that only stages from index `allowed_from` of `now`'s scheme on use
// (by default: the keys no recorded stage's results depend on, such as
// eval.* and runtime.*). Which stage uses which key comes from the stages'
// declarations (stage.h).
std::vector<std::string> config_differences(const std::string& saved_yaml, const Config& now,
                                            size_t allowed_from = static_cast<size_t>(-1));

// `to` (replaced) as a copy of run folder `from` that holds its finished
// stages only: report.json, the logs and the plots are left behind, so that a
// run started from it reports what it ran itself.
void copy_finished_stages(const std::string& from, const std::string& to);

// Whether `path` exists, polled for up to `seconds` (a file another node
// just wrote may take a moment to appear on a network file system).
bool wait_for_file(const std::string& path, double seconds);

}  // namespace smoe::pipeline
