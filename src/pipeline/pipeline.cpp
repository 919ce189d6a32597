#include "pipeline/pipeline.h"

#include "core/error.h"
#include "core/heartbeat.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/progress.h"
#include "core/stop.h"
#include "pipeline/fault.h"
#include "pipeline/run_state.h"
#include "pipeline/stage_traffic.h"

using nlohmann::json;

namespace smoe::pipeline {
namespace {

// A failure inside a stage that is not smoe's own (smoe's errors are one
// line naming the culprit already): a libtorch error, whose message may run
// over many lines with a backtrace, or another library's exception. The
// user reads one line naming the stage, the rank, the message's first line
// and the keys the stage reads; the whole message goes to log.jsonl.
std::string stage_failure(const Stage& stage, int rank, std::string message, const std::string& whole) {
  message = message.substr(0, message.find('\n'));
  if (message.size() > 300) message = message.substr(0, 300) + "...";
  log::event("stage_failure", {{"stage", stage.name()}, {"rank", rank}, {"message", whole}});
  std::string keys;
  for (const std::string& k : stage.keys()) keys += (keys.empty() ? "" : ", ") + k + (k.back() == '.' ? "*" : "");
  return fmt::format("stage {} failed on rank {}: {} (the stage reads {}; the whole message is in the rank's log)",
                     stage.name(), rank, message, keys.empty() ? "no config key" : keys);
}

}  // namespace

Pipeline::Pipeline(Config config, comm::Communicator& comm, RunDir& run, RuntimeInfo runtime) {
  check_config(config);
  stages_ = scheme_stages(config);
  state_ = std::make_unique<RunState>(std::move(config), comm, run, runtime);
}

Pipeline::~Pipeline() = default;

void Pipeline::restore_stage(Stage& stage) {
  stage.restore(*state_);
  if (auto m = stage.trained_model(state_->cfg)) state_->model = m;
}

void Pipeline::run_stage(Stage& stage) {
  RunState& s = *state_;
  const std::string name = stage.name();
  if (stage.recorded() && s.run.done(name)) {
    log::info("{:<9} already done (run.json): skipped", name);
    restore_stage(stage);
    return;
  }
  log::info("{:<9} starting", name);
  heartbeat::stage(name);
  Progress clock(name, 1, 1);
  memory::release_free_memory();
  memory::reset_peak();
  json record;
  const StageTraffic traffic(s.comm);
  try {
    inject_stage_fault(name, s.comm.rank());  // SMOE_FAULT=ACTION:NAME[:RANK] (pipeline/fault.h)
    record = stage.run(s);
  } catch (const Error&) {
    throw;
  } catch (const Stopped&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(stage_failure(stage, s.comm.rank(), e.what_without_backtrace(), e.what()));
  } catch (const std::exception& e) {
    throw Error(stage_failure(stage, s.comm.rank(), e.what(), e.what()));
  }
  if (auto m = stage.trained_model(s.cfg)) s.model = m;
  if (record.is_null()) record = json::object();
  record["seconds"] = clock.seconds();
  record["comm"] = traffic.finish(s.comm);
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
      restore_stage(*stage);
    else
      run_stage(*stage);
  }
}

}  // namespace smoe::pipeline
