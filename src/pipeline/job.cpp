#include "pipeline/job.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "core/stop.h"
#include "data/integrity.h"
#include "data/manifest.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"
#include "pipeline/provenance.h"
#include "pipeline/run_dir.h"
#include "pipeline/run_lock.h"
#include "pipeline/runtime.h"
#include "pipeline/stage.h"
#include "pipeline/stall_inspector.h"

namespace smoe::pipeline {
bool root_error_ends_job(comm::Communicator& comm, std::string error) {
  comm.broadcast_bytes(error, 0);
  if (error.empty()) return false;
  if (comm.is_root()) throw Error(error);
  return true;
}

int run_job(comm::MpiRuntime& mpi, comm::DeviceRouter& comm, const JobRequest& job) {
  const int rank = comm.rank();

  // Phase 1: config, checks, device, then the run folder: decided by rank 0
  // (the device by every rank) and shared; nothing is written until every
  // check has passed on every rank.
  std::string error, manifest, config_yaml;
  Config cfg;
  pipeline::RunDir run;
  pipeline::RunLock lock;  // one job per run folder, held by rank 0 until the end
  // What earlier checks of the shards found (data/integrity.h).
  const std::string shards_cache = (std::filesystem::path(job.run_dir) / "shards_verified.json").string();
  data::VerifyCache shards;
  if (comm.is_root()) {
    try {
      if (job.command == "train") {
        cfg = Config::load(job.config, job.sets);
        if (!job.until.empty()) {
          std::vector<std::string> names;
          for (const auto& st : pipeline::scheme_plan(cfg))
            if (st.recorded) names.push_back(st.name);
          SMOE_CHECK(std::find(names.begin(), names.end(), job.until) != names.end(),
                     "--until {}: not a stage of scheme '{}' ({})", job.until, cfg.scheme, fmt::join(names, ", "));
        }
        lock = pipeline::RunLock::acquire(job.run_dir);
        // Check the registry names, the scheme, the dataset and given
        // checkpoints before creating anything.
        shards = data::load_verify_cache(shards_cache);
        pipeline::check_inputs(cfg, shards);
      } else {
        // A folder that holds no run gets no lock file beside it.
        pipeline::RunDir::existing(job.run_dir);
        lock = pipeline::RunLock::acquire(job.run_dir);
        run = pipeline::RunDir::existing(job.run_dir);
        cfg = Config::from_yaml_text(run.saved_config_yaml(), run.file("config.yaml"), job.sets);
        auto diffs = pipeline::config_differences(run.saved_config_yaml(), cfg);
        SMOE_CHECK(diffs.empty(), "smoe eval: only eval.* and runtime.* keys may change ({})", fmt::join(diffs, "; "));
        shards = data::load_verify_cache(shards_cache);
        pipeline::check_shards(cfg, data::Manifest::load(cfg.data.path), shards);
      }
      config_yaml = cfg.to_yaml(false);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (root_error_ends_job(comm, error)) return 1;
  comm.broadcast_bytes(config_yaml, 0);
  if (!comm.is_root()) cfg = Config::from_yaml_text(config_yaml, "rank 0's config", {});

  // Every rank's device (collective; the same error on every rank).
  pipeline::RuntimeInfo rt;
  try {
    rt = pipeline::setup_runtime(cfg.runtime, comm, mpi.local_rank(), mpi.local_size());
    comm.set_device_collectives(!rt.device_shared);
  } catch (const std::exception&) {
    if (comm.is_root()) throw;
    return 1;
  }

  if (comm.is_root()) {
    try {
      if (job.command == "train") {
        auto mode = job.resume  ? pipeline::OpenMode::resume
                    : job.force ? pipeline::OpenMode::force
                                : pipeline::OpenMode::fresh;
        run = pipeline::RunDir::open_root(job.run_dir, cfg, mode, job.redo_from);
      }
      data::save_verify_cache(shards, shards_cache);
      manifest = run.manifest_text();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (root_error_ends_job(comm, error)) return 1;
  comm.broadcast_bytes(manifest, 0);
  if (!comm.is_root()) run = pipeline::RunDir::attach(job.run_dir, manifest);
  // Every rank must see the run folder rank 0 wrote (a shared file system).
  std::string unseen;
  if (!comm.is_root() && !pipeline::wait_for_file(run.file("run.json"), 10.0))
    unseen = fmt::format(
        "rank {} on host {} does not see the run folder {} that rank 0 wrote: put it on a file system "
        "every node shares",
        rank, pipeline::host_name(), job.run_dir);
  std::vector<std::string> unseen_all = comm.allgather_bytes(unseen);
  for (const auto& u : unseen_all)
    if (!u.empty()) {
      if (comm.is_root()) throw Error(u);
      return 1;
    }

  // Phase 2: the work. Any failure from here ends every rank.
  try {
    log::init({rank, comm.size(), run.file(rank == 0 ? "log.jsonl" : fmt::format("log.rank-{}.jsonl", rank)),
               job.verbose, job.quiet});
    log::info("smoe {}: {} rank{} ({}), {} thread{} per rank, device {}, run folder {}", job.command, comm.size(),
              comm.size() == 1 ? "" : "s", comm.name(), rt.threads, rt.threads == 1 ? "" : "s", rt.device_name(),
              job.run_dir);
    for (const auto& note : rt.notes) log::warn("{}", note);
    // No failure may leave the job waiting for ever (pipeline/stall_inspector.h).
    const double stall = cfg.runtime.stall_timeout_s;
    pipeline::StallInspector inspector(comm, {stall, std::clamp(stall / 6, 0.05, 10.0)});
    log::event("start", {{"command", job.command},
                         {"ranks", comm.size()},
                         {"threads", rt.threads},
                         {"device", rt.device_name()},
                         {"local_rank", rt.local_rank}});
    pipeline::Pipeline p(cfg, comm, run, rt);
    if (job.command == "train")
      p.train(job.until);
    else
      p.evaluate();
    log::event("finish", {{"command", job.command}});
    log::shutdown();
  } catch (const Stopped& e) {
    // Every rank agreed to stop at the same step (core/stop.h): no abort.
    log::warn("{}; resume with --resume (exit {})", e.what(), kResumableExit);
    log::event("stopped", {{"message", e.what()}});
    log::shutdown();
    return kResumableExit;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smoe: error%s: %s\n", comm.size() > 1 ? fmt::format(" on rank {}", rank).c_str() : "",
                 e.what());
    std::fflush(stderr);
    log::event("error", {{"message", e.what()}});
    log::shutdown();
    if (comm.size() > 1) comm.abort(1, e.what());
    return 1;
  }
  return 0;
}

}  // namespace smoe::pipeline
