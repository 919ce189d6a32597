#include "pipeline/sweep_driver.h"

#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/stop.h"
#include "pipeline/job.h"
#include "pipeline/protocol.h"
#include "pipeline/run_dir.h"
#include "pipeline/scheduler.h"

namespace smoe::pipeline {
namespace {

// sweep: every run of a sweep file, each a normal run folder under --out;
// earlier stages shared where configs allow (pipeline/sweep.h); finished runs
// skipped. The job's ranks form groups of --ranks-per-run ranks; the runs are
// tasks that the dynamic scheduler (pipeline/scheduler.h) hands to the
// groups' first ranks, a run that starts from another's folder only once that
// one is finished. Then the table of the sweep.

// The worse of two exit statuses: an error (1) over a stop (75) over 0.
int worse_exit(int a, int b) {
  auto severity = [](int rc) { return rc == 0 ? 0 : rc == kResumableExit ? 1 : 2; };
  const int worst = severity(a) >= severity(b) ? a : b;
  return severity(worst) == 2 ? 1 : worst;
}

class SweepDriver {
 public:
  SweepDriver(comm::MpiRuntime& mpi, comm::Communicator& world, const pipeline::Sweep& sweep, std::string out,
              int per_run, bool verbose, bool quiet)
      : mpi_(mpi), world_(world), sweep_(sweep), out_(std::move(out)), verbose_(verbose), quiet_(quiet) {
    groups_ = (world.size() + per_run - 1) / per_run;
    group_ = std::make_unique<comm::DeviceRouter>(mpi.split_world(world.rank() / per_run));
    leaders_ = mpi.split_world(group_->is_root() ? 0 : -1);
    const int first = world.rank() - group_->rank();
    where_ = groups_ == 1          ? std::string()
             : group_->size() == 1 ? fmt::format("[rank {}] ", first)
                                   : fmt::format("[ranks {}-{}] ", first, first + group_->size() - 1);
  }

  // Every rank: runs what its group is handed; returns the job's exit
  // status (0, kResumableExit or 1), the same on every rank.
  int run() {
    // SIGTERM / SIGUSR1 (a time limit) only set the stop flag for the whole
    // sweep: a base or joint stage stops at its next step, anything else
    // finishes the run it is in; no group starts another, and every rank
    // exits with kResumableExit.
    StopScope stop_scope;
    int rc = 0;
    if (group_->is_root()) {
      std::vector<int64_t> tasks, after;
      if (world_.is_root()) plan(tasks, after);
      pipeline::run_tasks(
          *leaders_, tasks, after,
          [&](int64_t i) {
            if (rc == 0 && stop_requested()) rc = kResumableExit;
            if (rc != 0) return nlohmann::json{{"halt", true}};  // stopped or failed: take nothing more
            for (int r = 1; r < group_->size(); ++r) group_->send(r, kSweepTaskTag, std::to_string(i));
            rc = worse_exit(rc, run_in_group(static_cast<size_t>(i)));
            if (rc == 0 && stop_requested()) rc = kResumableExit;
            return nlohmann::json{{"halt", rc != 0}};
          },
          [](int64_t, int, const nlohmann::json&) {});
      for (int r = 1; r < group_->size(); ++r) group_->send(r, kSweepTaskTag, "-1");
    } else {
      for (;;) {
        const int64_t i = std::stoll(group_->recv_idle(0, kSweepTaskTag).payload);
        if (i < 0) break;
        rc = worse_exit(rc, run_in_group(static_cast<size_t>(i)));
      }
    }
    return worst_exit(rc);
  }

  // The rank that met an error in a run (rethrown by the caller after every
  // rank has agreed to end).
  std::exception_ptr error() const { return error_; }

 private:
  std::string dir_of(size_t i) const { return (std::filesystem::path(out_) / sweep_.runs[i].name).string(); }
  bool has(size_t i, const char* file) const {
    return std::filesystem::exists(std::filesystem::path(dir_of(i)) / file);
  }

  // World rank 0: the runs still to do, and the run each must wait for (the
  // one whose folder it will start from, when that one is not finished yet).
  void plan(std::vector<int64_t>& tasks, std::vector<int64_t>& after) const {
    for (size_t i = 0; i < sweep_.runs.size(); ++i) {
      if (has(i, "report.json")) {
        if (!quiet_) std::cout << fmt::format("sweep: {} already finished\n", sweep_.runs[i].name);
        continue;
      }
      int64_t from = -1;
      if (!has(i, "run.json")) {  // a started run resumes from its own folder
        from = pipeline::sweep_start(sweep_, i, [](size_t, const std::string&) { return true; }).from;
        if (from >= 0 && has(static_cast<size_t>(from), "report.json")) from = -1;
      }
      tasks.push_back(static_cast<int64_t>(i));
      after.push_back(from);
    }
    if (!quiet_)
      std::cout << fmt::format("sweep: {} of {} runs to do, by {} group{} of {} rank{}\n", tasks.size(),
                               sweep_.runs.size(), groups_, groups_ == 1 ? "" : "s", group_->size(),
                               group_->size() == 1 ? "" : "s")
                << std::flush;
  }

  // Every rank of a group: run i, its folder prepared by the group's first rank.
  int run_in_group(size_t i) {
    JobRequest a;
    a.command = "train";
    a.config = sweep_.config_path;
    a.sets = sweep_.runs[i].sets;
    a.run_dir = dir_of(i);
    a.verbose = verbose_;
    a.quiet = quiet_;
    const std::string& name = sweep_.runs[i].name;
    std::string action;
    if (group_->is_root()) {
      try {
        action = prepare(i);
      } catch (const std::exception& e) {
        action = std::string("error ") + e.what();
      }
    }
    group_->broadcast_bytes(action, 0);
    if (action.rfind("error ", 0) == 0) return fail_run(Error(action.substr(6)));
    if (action == "done") {
      say(fmt::format("{} already finished", name));
      return 0;
    }
    a.resume = action != "fresh";
    if (action.rfind("copy ", 0) == 0) {
      const std::string rest = action.substr(5);
      a.redo_from = rest.substr(0, rest.find(' '));
      say(fmt::format("{} starts from {}'s finished stages{}", name, rest.substr(rest.find(' ') + 1),
                      a.redo_from.empty() ? " (only the evaluation differs)" : ", redoing from " + a.redo_from));
    } else {
      say(fmt::format("{} ({} of {})", name, i + 1, sweep_.runs.size()));
    }
    try {
      return run_job(mpi_, *group_, a);
    } catch (const std::exception& e) {
      return fail_run(e);
    }
  }

  // The group's first rank: what run i needs, its folder made ready.
  std::string prepare(size_t i) const {
    if (has(i, "report.json")) return "done";
    if (has(i, "run.json")) return "resume";
    // Only runs that are finished can lend their folders: others may be
    // running in another group right now.
    auto finished = [&](size_t j, const std::string& stage) {
      return has(j, "report.json") && pipeline::RunDir::existing(dir_of(j)).done(stage);
    };
    const pipeline::SweepStart start = pipeline::sweep_start(sweep_, i, finished);
    if (start.from < 0) return "fresh";
    // Its earlier stages are those of run `from`: start from a copy of its folder.
    copy_finished_stages(dir_of(static_cast<size_t>(start.from)), dir_of(i));
    return "copy " + start.redo_from + " " + sweep_.runs[static_cast<size_t>(start.from)].name;
  }

  void say(const std::string& line) const {
    if (group_->is_root() && !quiet_) std::cout << "sweep: " << where_ << line << "\n" << std::flush;
  }

  // An error that the group's first rank met before the run started (the
  // config, the folder): the other ranks of the group only end.
  int fail_run(const std::exception& e) {
    if (group_->is_root() && !error_) error_ = std::make_exception_ptr(Error(e.what()));
    return 1;
  }

  // The worst exit status over every rank, gathered by world rank 0 with
  // idle waits (ranks that finished early must not spin on a core that
  // another group trains on).
  int worst_exit(int rc) {
    if (!world_.is_root()) {
      world_.send(0, kSweepExitTag, std::to_string(rc));
      return std::stoi(world_.recv_idle(0, kSweepExitTag).payload);
    }
    int worst = rc;
    for (int r = 1; r < world_.size(); ++r)
      worst = worse_exit(worst, std::stoi(world_.recv_idle(comm::kAnySource, kSweepExitTag).payload));
    for (int r = 1; r < world_.size(); ++r) world_.send(r, kSweepExitTag, std::to_string(worst));
    return worst;
  }

  comm::MpiRuntime& mpi_;
  comm::Communicator& world_;
  const pipeline::Sweep& sweep_;
  std::string out_;
  bool verbose_, quiet_;
  int groups_ = 1;
  std::unique_ptr<comm::DeviceRouter> group_;
  std::unique_ptr<comm::Communicator> leaders_;  // the groups' first ranks; null elsewhere
  std::string where_;
  std::exception_ptr error_;
};

// sweep --dry-run: each run, the earlier run whose finished stages it will
// start from (when every earlier run is finished), and its folder's state.
}  // namespace

int print_sweep_plan(const Sweep& sweep, const std::string& out) {
  namespace fs = std::filesystem;
  auto all_done = [](size_t, const std::string&) { return true; };
  size_t fresh = 0, done = 0;
  for (size_t i = 0; i < sweep.runs.size(); ++i) {
    const fs::path dir = fs::path(out) / sweep.runs[i].name;
    const pipeline::SweepStart st = pipeline::sweep_start(sweep, i, all_done);
    const std::string state = fs::exists(dir / "report.json") ? "finished"
                              : fs::exists(dir / "run.json")  ? "started: resumes"
                                                              : "to do";
    done += state == "finished";
    fresh += st.from < 0;
    std::cout << fmt::format(
        "{:>4}  {}  [{}]  {}\n", i + 1, sweep.runs[i].name, state,
        st.from < 0 ? std::string("from scratch")
        : st.redo_from.empty()
            ? "reuses every stage of " + sweep.runs[static_cast<size_t>(st.from)].name
            : fmt::format("reuses {}'s stages before {}", sweep.runs[static_cast<size_t>(st.from)].name, st.redo_from));
  }
  std::cout << fmt::format("{} runs ({} finished); {} from scratch, {} reusing an earlier run's stages\n",
                           sweep.runs.size(), done, fresh, sweep.runs.size() - fresh);
  return 0;
}

int run_sweep(comm::MpiRuntime& mpi, comm::Communicator& world, const Sweep& sweep, const std::string& out,
              int ranks_per_run, bool verbose, bool quiet) {
  SweepDriver driver(mpi, world, sweep, out, ranks_per_run, verbose, quiet);
  const int rc = driver.run();
  if (driver.error()) std::rethrow_exception(driver.error());
  return rc;
}

}  // namespace smoe::pipeline
