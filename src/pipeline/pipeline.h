// A run of a training scheme (stage.h): the scheme's stages in order on a
// shared run state (run_state.h). Each recorded stage runs unless run.json
// says it finished, and is recorded with its duration when it does; the
// evaluation runs every time. docs/architecture.md describes
// the layers, stages and registries.
#pragma once

#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "pipeline/config.h"
#include "pipeline/run_dir.h"
#include "pipeline/runtime.h"
#include "pipeline/stage.h"

namespace smoe::pipeline {

struct RunState;

class Pipeline {
 public:
  // Checks the config (registry names, stage checks), opens the datasets and
  // builds the base model.
  Pipeline(Config config, comm::Communicator& comm, RunDir& run, RuntimeInfo runtime);
  ~Pipeline();

  // Every stage not yet recorded as finished, then the evaluation; with
  // `until`, the stages up to and including that one only.
  void train(const std::string& until = "");
  // The evaluation alone, from a finished run's checkpoints.
  void evaluate();

 private:
  void run_stage(Stage& stage);
  // A finished stage skipped: what later stages need from it, and the model it trained.
  void restore_stage(Stage& stage);

  std::unique_ptr<RunState> state_;
  std::vector<std::unique_ptr<Stage>> stages_;
};

}  // namespace smoe::pipeline
