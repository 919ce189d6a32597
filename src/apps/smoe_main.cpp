// smoe: train and evaluate single-gate Mixtures of Experts.
//
//   smoe train  [--config FILE] --run-dir DIR [--set key=value ...] [--resume | --force]
//   smoe eval   --run-dir DIR [--set eval.taus=[...] ...]
//   smoe config --print [--config FILE] [--set key=value ...]
//   smoe config --keys [--markdown]
//   smoe table  [--csv FILE] [--plot PNG] [--metric PATH ...] RUN_OR_FOLDER ...
//   smoe sweep  SWEEP_FILE --out DIR [--ranks-per-run N] [--dry-run]
//   smoe --version
//
// `train` and `eval` run under mpirun/srun (one rank per process) or alone.
#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>

#include "apps/cli.h"
#include "comm/mpi_communicator.h"
#include "comm/router.h"
#include "core/atomic_file.h"
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/stop.h"
#include "data/manifest.h"
#include "eval/run_plot.h"
#include "eval/run_table.h"
#include "pipeline/config_reference.h"
#include "pipeline/pipeline.h"
#include "pipeline/provenance.h"
#include "pipeline/run_dir.h"
#include "pipeline/run_lock.h"
#include "pipeline/runtime.h"
#include "pipeline/scheduler.h"
#include "pipeline/stage.h"
#include "pipeline/stall_inspector.h"
#include "pipeline/sweep.h"

namespace po = boost::program_options;
using namespace smoe;

namespace {

const char* kUsage =
    "usage:\n"
    "  smoe train  [--config FILE] --run-dir DIR [--set key=value ...] [--resume | --force]\n"
    "  smoe eval   --run-dir DIR [--set key=value ...]\n"
    "  smoe config --print [--config FILE] [--set key=value ...]\n"
    "  smoe config --keys [--markdown]\n"
    "  smoe table  [--csv FILE] [--plot PNG] [--metric PATH ...] RUN_OR_FOLDER ...   mean ± std over seeds\n"
    "  smoe sweep  SWEEP_FILE --out DIR [--ranks-per-run N] [--dry-run]          a grid of overrides x seeds, then its "
    "table\n"
    "  smoe --version\n"
    "Run `smoe COMMAND --help` for a command's options.\n";

struct Args {
  std::string config, run_dir, redo_from, until;
  std::vector<std::string> sets;
  bool resume = false, force = false, verbose = false, quiet = false, print = false, keys = false, markdown = false;
};

bool wants_help(const std::vector<std::string>& args) {
  return std::find_if(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; }) !=
         args.end();
}

Args parse(const std::string& cmd, const std::vector<std::string>& argv, bool& help) {
  Args a;
  po::options_description opts("smoe " + cmd);
  opts.add_options()("help,h", "this help");
  if (cmd == "train" || cmd == "config")
    opts.add_options()("config", po::value(&a.config),
                       "experiment YAML file (default: every key's default, then --set)");
  if (cmd != "config") opts.add_options()("run-dir", po::value(&a.run_dir)->required(), "run folder");
  opts.add_options()("set", po::value(&a.sets)->composing(), "override a config key: --set experts.count=8");
  if (cmd == "train")
    opts.add_options()("resume", po::bool_switch(&a.resume), "continue the run in --run-dir")  //
        ("force", po::bool_switch(&a.force), "delete the run in --run-dir and start over")     //
        ("redo-from", po::value(&a.redo_from),
         "with --resume: redo this stage and every later one of the scheme (base, embed, cluster, gate, experts, "
         "em)")  //
        ("until", po::value(&a.until),
         "stop after this stage of the scheme (e.g. base: train the base model only); --resume continues");
  if (cmd == "config")
    opts.add_options()("print", po::bool_switch(&a.print), "print the resolved config as YAML")  //
        ("keys", po::bool_switch(&a.keys), "list every key with its type, default and doc")(
            "markdown", po::bool_switch(&a.markdown), "with --keys: the Markdown of docs/configuration.md");
  if (cmd != "config")
    opts.add_options()("verbose,v", po::bool_switch(&a.verbose), "debug messages")  //
        ("quiet,q", po::bool_switch(&a.quiet), "warnings and errors only");
  help = wants_help(argv);
  if (help) {
    std::cout << opts;
    return a;
  }
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).run(), vm);
  po::notify(vm);
  if (cmd == "train") {
    SMOE_CHECK(!(a.resume && a.force), "--resume and --force exclude each other");
    SMOE_CHECK(a.redo_from.empty() || a.resume, "--redo-from needs --resume");
  }
  return a;
}

int cmd_config(const Args& a) {
  if (a.keys) {
    if (a.markdown) {
      std::cout << pipeline::config_reference_markdown();
      return 0;
    }
    for (const auto& r : pipeline::config_reference()) {
      const KeyInfo& k = r.info;
      std::cout << fmt::format("{:<28} {:<14} {:<22} {}{}\n", k.key, k.type, k.default_value, k.doc,
                               r.accepted.empty() ? "" : fmt::format(" (one of: {})", fmt::join(r.accepted, ", ")));
    }
    return 0;
  }
  SMOE_CHECK(a.print, "smoe config: give --print or --keys");
  Config cfg = Config::load(a.config, a.sets);
  pipeline::check_config(cfg);
  std::cout << cfg.to_yaml();
  return 0;
}

// table: finished runs as mean ± std per config over seeds (eval/run_table.h).
int cmd_table(const std::vector<std::string>& argv) {
  std::vector<std::string> paths, metrics;
  std::string csv, plot;
  po::options_description opts("smoe table [options] RUN_OR_FOLDER ...");
  opts.add_options()("help,h", "this help")                                                        //
      ("csv", po::value(&csv), "also write the table as CSV (mean and std columns) to this file")  //
      ("plot", po::value(&plot),
       "also draw accuracy against MACs to this PNG: per cell the base model, the MoE and the anytime curve, "
       "with ± std error bars")  //
      ("metric", po::value(&metrics)->composing(),
       "a report.json path to tabulate, e.g. moe.bagging.macs (repeatable; default: every 'accuracy')")  //
      ("runs", po::value(&paths)->composing(), "run folders, or folders holding run folders");
  po::positional_options_description pos;
  pos.add("runs", -1);
  if (wants_help(argv)) {
    std::cout << "Runs whose configs differ only in seed, runtime.* and data.path form one cell.\n" << opts;
    return 0;
  }
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  SMOE_CHECK(!paths.empty(), "smoe table: give run folders (or folders holding them)");
  std::vector<eval::RunRow> runs;
  for (const auto& p : paths)
    for (const auto& dir : eval::find_runs(p)) runs.push_back(eval::read_run(dir, metrics));
  SMOE_CHECK(std::any_of(runs.begin(), runs.end(), [](const eval::RunRow& r) { return !r.metrics.empty(); }),
             "smoe table: none of the {} runs has {}", runs.size(),
             metrics.empty() ? std::string("an accuracy in its report.json") : "the metrics asked for");
  const eval::RunTable t = eval::make_table(runs, metrics);
  std::cout << eval::to_markdown(t);
  if (!csv.empty()) write_file_atomic(csv, eval::to_csv(t));
  if (!plot.empty()) eval::plot_table(t, plot, "accuracy vs MACs");
  return 0;
}

// Rank 0's error (empty: none) reaches every rank: rank 0 throws it (it is
// printed once), the others return true and end quietly.
bool root_error_ends_job(comm::Communicator& comm, std::string error) {
  comm.broadcast_bytes(error, 0);
  if (error.empty()) return false;
  if (comm.is_root()) throw Error(error);
  return true;
}

// train and eval: every rank runs this. Errors that every rank meets alike
// (config, run folder) are printed once by rank 0; any other error is
// printed by the rank that met it, and ends the whole job.
int run_job(comm::MpiRuntime& mpi, comm::DeviceRouter& comm, const std::string& cmd, const Args& a) {
  const int rank = comm.rank();

  // Phase 1: config, checks, device, then the run folder: decided by rank 0
  // (the device by every rank) and shared; nothing is written until every
  // check has passed on every rank.
  std::string error, manifest, config_yaml;
  Config cfg;
  pipeline::RunDir run;
  pipeline::RunLock lock;  // one job per run folder, held by rank 0 until the end
  // What earlier checks of the shards found (data/integrity.h).
  const std::string shards_cache = (std::filesystem::path(a.run_dir) / "shards_verified.json").string();
  data::VerifyCache shards;
  if (comm.is_root()) {
    try {
      if (cmd == "train") {
        cfg = Config::load(a.config, a.sets);
        if (!a.until.empty()) {
          std::vector<std::string> names;
          for (const auto& st : pipeline::scheme_plan(cfg))
            if (st.recorded) names.push_back(st.name);
          SMOE_CHECK(std::find(names.begin(), names.end(), a.until) != names.end(),
                     "--until {}: not a stage of scheme '{}' ({})", a.until, cfg.scheme, fmt::join(names, ", "));
        }
        lock = pipeline::RunLock::acquire(a.run_dir);
        // Check the registry names, the scheme, the dataset and given
        // checkpoints before creating anything.
        shards = data::load_verify_cache(shards_cache);
        pipeline::check_inputs(cfg, shards);
      } else {
        // A folder that holds no run gets no lock file beside it.
        pipeline::RunDir::existing(a.run_dir);
        lock = pipeline::RunLock::acquire(a.run_dir);
        run = pipeline::RunDir::existing(a.run_dir);
        cfg = Config::from_yaml_text(run.saved_config_yaml(), run.file("config.yaml"), a.sets);
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
      if (cmd == "train") {
        auto mode = a.resume  ? pipeline::OpenMode::resume
                    : a.force ? pipeline::OpenMode::force
                              : pipeline::OpenMode::fresh;
        run = pipeline::RunDir::open_root(a.run_dir, cfg, mode, a.redo_from);
      }
      data::save_verify_cache(shards, shards_cache);
      manifest = run.manifest_text();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (root_error_ends_job(comm, error)) return 1;
  comm.broadcast_bytes(manifest, 0);
  if (!comm.is_root()) run = pipeline::RunDir::attach(a.run_dir, manifest);
  // Every rank must see the run folder rank 0 wrote (a shared file system).
  std::string unseen;
  if (!comm.is_root() && !pipeline::wait_for_file(run.file("run.json"), 10.0))
    unseen = fmt::format(
        "rank {} on host {} does not see the run folder {} that rank 0 wrote: put it on a file system "
        "every node shares",
        rank, pipeline::host_name(), a.run_dir);
  std::vector<std::string> unseen_all = comm.allgather_bytes(unseen);
  for (const auto& u : unseen_all)
    if (!u.empty()) {
      if (comm.is_root()) throw Error(u);
      return 1;
    }

  // Phase 2: the work. Any failure from here ends every rank.
  try {
    log::init({rank, comm.size(), run.file(rank == 0 ? "log.jsonl" : fmt::format("log.rank-{}.jsonl", rank)), a.verbose,
               a.quiet});
    log::info("smoe {}: {} rank{} ({}), {} thread{} per rank, device {}, run folder {}", cmd, comm.size(),
              comm.size() == 1 ? "" : "s", comm.name(), rt.threads, rt.threads == 1 ? "" : "s", rt.device_name(),
              a.run_dir);
    for (const auto& note : rt.notes) log::warn("{}", note);
    // No failure may leave the job waiting for ever (pipeline/stall_inspector.h).
    const double stall = cfg.runtime.stall_timeout_s;
    pipeline::StallInspector inspector(comm, {stall, std::clamp(stall / 6, 0.05, 10.0)});
    log::event("start", {{"command", cmd},
                         {"ranks", comm.size()},
                         {"threads", rt.threads},
                         {"device", rt.device_name()},
                         {"local_rank", rt.local_rank}});
    pipeline::Pipeline p(cfg, comm, run, rt);
    if (cmd == "train")
      p.train(a.until);
    else
      p.evaluate();
    log::event("finish", {{"command", cmd}});
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

int cmd_run(const std::string& cmd, const Args& a, int& argc, char**& argv) {
  comm::MpiRuntime mpi(&argc, &argv);
  comm::DeviceRouter comm(mpi.world());
  return run_job(mpi, comm, cmd, a);
}

// sweep: every run of a sweep file, each a normal run folder under --out;
// earlier stages shared where configs allow (pipeline/sweep.h); finished runs
// skipped. The job's ranks form groups of --ranks-per-run ranks; the runs are
// tasks that the dynamic scheduler (pipeline/scheduler.h) hands to the
// groups' first ranks, a run that starts from another's folder only once that
// one is finished. Then the table of the sweep.
constexpr int kSweepTaskTag = 1011;  // group root -> its ranks: the next run, or -1
constexpr int kSweepExitTag = 1012;  // every rank <-> world rank 0: exit statuses

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
    Args a;
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
      return run_job(mpi_, *group_, "train", a);
    } catch (const std::exception& e) {
      return fail_run(e);
    }
  }

  // The group's first rank: what run i needs, its folder made ready.
  std::string prepare(size_t i) const {
    namespace fs = std::filesystem;
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
    const std::string dir = dir_of(i);
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(out_);
    fs::copy(dir_of(static_cast<size_t>(start.from)), dir, fs::copy_options::recursive);
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string n = e.path().filename().string();
      if (n == "report.json" || n.rfind("log", 0) == 0 || e.path().extension() == ".png") fs::remove(e.path());
    }
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
int sweep_plan(const pipeline::Sweep& sweep, const std::string& out) {
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

int cmd_sweep(const std::vector<std::string>& args, int& argc, char**& argv) {
  std::string file, out;
  int per_run = 0;
  bool verbose = false, quiet = false, dry_run = false;
  po::options_description opts("smoe sweep SWEEP_FILE --out DIR");
  opts.add_options()("help,h", "this help")                                                       //
      ("sweep", po::value(&file)->required(), "the sweep file (YAML: config, set, grid, seeds)")  //
      ("out", po::value(&out)->required(), "the sweep folder: one run folder per run")            //
      ("ranks-per-run", po::value(&per_run)->default_value(0),
       "ranks that run each run together; the job's ranks form groups of this size that take runs as they "
       "free up (default 0: all ranks, one run at a time)")  //
      ("dry-run", po::bool_switch(&dry_run),
       "print the runs, what each reuses and what is already done, then stop (no MPI, nothing written)")  //
      ("verbose,v", po::bool_switch(&verbose), "debug messages")                                          //
      ("quiet,q", po::bool_switch(&quiet), "warnings and errors only");
  po::positional_options_description pos;
  pos.add("sweep", 1);
  if (wants_help(args)) {
    std::cout << opts;
    return 0;
  }
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (dry_run) return sweep_plan(pipeline::load_sweep(file), out);
  comm::MpiRuntime mpi(&argc, &argv);
  comm::DeviceRouter world(mpi.world());
  // Every rank reads the sweep file (the same text gives the same runs).
  std::string error;
  pipeline::Sweep sweep;
  try {
    SMOE_CHECK(per_run >= 0 && per_run <= world.size(),
               "smoe sweep: --ranks-per-run {} is not between 0 and the job's {} rank{}", per_run, world.size(),
               world.size() == 1 ? "" : "s");
    sweep = pipeline::load_sweep(file);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) {
    if (world.is_root()) throw Error(error);
    return 1;
  }
  SweepDriver driver(mpi, world, sweep, out, per_run == 0 ? world.size() : per_run, verbose, quiet);
  const int rc = driver.run();
  if (driver.error()) std::rethrow_exception(driver.error());
  if (rc == kResumableExit && world.is_root())
    std::cerr << fmt::format("smoe sweep: stopped on a signal; run the same command again to continue (exit {})\n",
                             kResumableExit);
  if (rc != 0) return rc;
  if (world.is_root()) {
    std::vector<eval::RunRow> runs;
    for (size_t i = 0; i < sweep.runs.size(); ++i)
      runs.push_back(eval::read_run((std::filesystem::path(out) / sweep.runs[i].name).string()));
    const eval::RunTable t = eval::make_table(runs);
    std::cout << eval::to_markdown(t);
    write_file_atomic((std::filesystem::path(out) / "table.csv").string(), eval::to_csv(t));
    eval::plot_table(t, (std::filesystem::path(out) / "accuracy_macs.png").string(),
                     std::filesystem::path(file).stem().string());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  memory::tune_malloc(2);  // before any thread starts (core/memory.h)
  int status = apps::run_cli("smoe", [&]() -> int {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {  // a usage error: to stderr
      std::cerr << kUsage;
      return 2;
    }
    if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      std::cout << kUsage;
      return 0;
    }
    if (args[0] == "--version" || args[0] == "version") {
      std::cout << pipeline::version_line() << "\n";
      return 0;
    }
    const std::string cmd = args[0];
    SMOE_CHECK(cmd == "train" || cmd == "eval" || cmd == "config" || cmd == "table" || cmd == "sweep",
               "unknown command '{}' (expected train, eval, config, table or sweep)", cmd);
    if (cmd == "table") return cmd_table(std::vector<std::string>(args.begin() + 1, args.end()));
    if (cmd == "sweep") return cmd_sweep(std::vector<std::string>(args.begin() + 1, args.end()), argc, argv);
    bool help = false;
    Args a = parse(cmd, std::vector<std::string>(args.begin() + 1, args.end()), help);
    if (help) return 0;
    if (cmd == "config") return cmd_config(a);
    return cmd_run(cmd, a, argc, argv);
  });
  return status;
}
