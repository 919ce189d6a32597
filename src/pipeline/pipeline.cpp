#include "pipeline/pipeline.h"

#include "core/error.h"
#include "core/heartbeat.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/progress.h"
#include "pipeline/fault.h"
#include "pipeline/run_state.h"

using nlohmann::json;

namespace smoe::pipeline {

Pipeline::Pipeline(Config config, comm::Communicator& comm, RunDir& run, RuntimeInfo runtime) {
  check_config(config);
  stages_ = scheme_stages(config);
  state_ = std::make_unique<RunState>(std::move(config), comm, run, runtime);
}

Pipeline::~Pipeline() = default;

void Pipeline::run_stage(Stage& stage) {
  RunState& s = *state_;
  const std::string name = stage.name();
  if (stage.recorded() && s.run.done(name)) {
    log::info("{:<9} already done (run.json): skipped", name);
    stage.restore(s);
    return;
  }
  log::info("{:<9} starting", name);
  heartbeat::stage(name);
  inject_stage_fault(name, s.comm.rank());  // SMOE_FAULT=ACTION:NAME[:RANK] (pipeline/fault.h)
  Progress clock(name, 1, 1);
  memory::release_free_memory();
  memory::reset_peak();
  json record = stage.run(s);
  if (record.is_null()) record = json::object();
  record["seconds"] = clock.seconds();
  record["peak_rss_mb"] = ranks_peak_rss_mb(s.comm);
  s.comm.barrier();
  if (stage.recorded() && s.comm.is_root()) s.run.mark_done(name, record);
  inject_stage_fault(name + "-done", s.comm.rank());  // the stage finished on every rank (and is recorded)
  log::info("{:<9} done in {}", name, format_duration(clock.seconds()));
  log::event("stage_done", {{"stage", name}, {"seconds", clock.seconds()}});
}

void Pipeline::train(const std::string& until) {
  for (auto& stage : stages_) {
    run_stage(*stage);
    if (stage->name() == until) {
      log::info("stopped after stage {} (--until); smoe train --resume continues", until);
      return;
    }
  }
}

void Pipeline::evaluate() {
  RunState& s = *state_;
  for (auto& stage : stages_)
    if (stage->recorded())
      SMOE_CHECK(s.run.done(stage->name()), "{}: stage '{}' has not finished; run smoe train --resume first",
                 s.run.root(), stage->name());
  for (auto& stage : stages_) {
    if (stage->recorded())
      stage->restore(s);
    else
      run_stage(*stage);
  }
}

}  // namespace smoe::pipeline
