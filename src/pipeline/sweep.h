// `smoe sweep`: a grid of config overrides x seeds, each run a normal run
// folder under the sweep's folder, run one after another by the whole job.
// The sweep file (YAML):
//
//   config: ../fmnist-quick.yaml      # the base config, relative to the sweep file
//   set: [data.limit_train=3000]      # overrides for every run (optional)
//   grid:                             # every combination of these values
//     experts.count: [2, 4, 8]
//     ensembler.kind: [bagging, stacking]
//   seeds: [0, 1, 2]
//
// A run that differs from an earlier run of the sweep only in keys of later
// stages starts from a copy of that run's folder and redoes only those
// stages (what `--resume --redo-from` does by hand): the base model, the
// embeddings and the clusters are computed once per distinct prefix. A run
// whose report.json exists is skipped, so a killed sweep resumes where it
// stopped.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "pipeline/config.h"

namespace smoe::pipeline {

struct SweepRun {
  std::string name;               // folder name under the sweep folder
  std::vector<std::string> sets;  // the sweep's set, the grid point and the seed, as key=value
  Config config;
};

struct Sweep {
  std::string config_path;  // the base config
  std::vector<SweepRun> runs;
};

// Reads and expands a sweep file; fails naming the file and the key.
Sweep load_sweep(const std::string& path);

// Where run `index` can start: the earlier run (index into runs) whose
// finished stages it can reuse most of, and the first stage it must redo
// ("" when only the evaluation differs); from = -1 when it starts from
// nothing. `finished(j, stage)` says whether run j's
// folder records `stage` as done.
struct SweepStart {
  int from = -1;
  std::string redo_from;
};
SweepStart sweep_start(const Sweep& sweep, size_t index,
                       const std::function<bool(size_t, const std::string&)>& finished);

}  // namespace smoe::pipeline
