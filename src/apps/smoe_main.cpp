// smoe: train and evaluate single-gate Mixtures of Experts.
//
//   smoe train  [--config FILE] --run-dir DIR [--set key=value ...] [--resume | --force]
//   smoe eval   --run-dir DIR [--set eval.taus=[...] ...]
//   smoe config --print [--config FILE] [--set key=value ...]
//   smoe config --keys
//   smoe table  [--csv FILE] [--metric PATH ...] RUN_OR_FOLDER ...
//   smoe sweep  SWEEP_FILE --out DIR
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
#include "core/stop.h"
#include "eval/run_table.h"
#include "data/manifest.h"
#include "pipeline/pipeline.h"
#include "pipeline/provenance.h"
#include "pipeline/run_dir.h"
#include "pipeline/run_lock.h"
#include "pipeline/runtime.h"
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
    "  smoe config --keys\n"
    "  smoe table  [--csv FILE] [--metric PATH ...] RUN_OR_FOLDER ...   mean ± std over seeds\n"
    "  smoe sweep  SWEEP_FILE --out DIR          a grid of overrides x seeds, then its table\n"
    "  smoe --version\n"
    "Run `smoe COMMAND --help` for a command's options.\n";

struct Args {
  std::string config, run_dir, redo_from;
  std::vector<std::string> sets;
  bool resume = false, force = false, verbose = false, quiet = false, print = false, keys = false;
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
    opts.add_options()("config", po::value(&a.config), "experiment YAML file (default: every key's default, then --set)");
  if (cmd != "config") opts.add_options()("run-dir", po::value(&a.run_dir)->required(), "run folder");
  opts.add_options()("set", po::value(&a.sets)->composing(), "override a config key: --set experts.count=8");
  if (cmd == "train")
    opts.add_options()("resume", po::bool_switch(&a.resume), "continue the run in --run-dir")  //
        ("force", po::bool_switch(&a.force), "delete the run in --run-dir and start over")     //
        ("redo-from", po::value(&a.redo_from),
         "with --resume: redo this stage and every later one of the scheme (base, embed, cluster, gate, experts, em)");
  if (cmd == "config")
    opts.add_options()("print", po::bool_switch(&a.print), "print the resolved config as YAML")  //
        ("keys", po::bool_switch(&a.keys), "list every key with its type, default and doc");
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
    for (const auto& k : config_keys())
      std::cout << fmt::format("{:<28} {:<14} {:<22} {}\n", k.key, k.type, k.default_value, k.doc);
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
  std::string csv;
  po::options_description opts("smoe table [options] RUN_OR_FOLDER ...");
  opts.add_options()("help,h", "this help")                                                               //
      ("csv", po::value(&csv), "also write the table as CSV (mean and std columns) to this file")          //
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
  return 0;
}

// train and eval: every rank runs this. Errors that every rank meets alike
// (config, run folder) are printed once by rank 0; any other error is
// printed by the rank that met it, and ends the whole job.
int run_job(comm::MpiRuntime& mpi, comm::DeviceRouter& comm, const std::string& cmd, const Args& a) {
  const int rank = comm.rank();

  // Phase 1: config and run folder, decided by rank 0 and shared.
  std::string error, manifest, config_yaml;
  Config cfg;
  pipeline::RunDir run;
  pipeline::RunLock lock;  // one job per run folder, held by rank 0 until the end
  if (comm.is_root()) {
    // What earlier checks of the shards found (data/integrity.h).
    const std::string shards_cache = (std::filesystem::path(a.run_dir) / "shards_verified.json").string();
    try {
      if (cmd == "train") {
        cfg = Config::load(a.config, a.sets);
        lock = pipeline::RunLock::acquire(a.run_dir);
        // Check the registry names, the scheme, the dataset and given
        // checkpoints before creating anything.
        auto shards = data::load_verify_cache(shards_cache);
        pipeline::check_inputs(cfg, shards);
        auto mode = a.resume  ? pipeline::OpenMode::resume
                    : a.force ? pipeline::OpenMode::force
                              : pipeline::OpenMode::fresh;
        run = pipeline::RunDir::open_root(a.run_dir, cfg, mode, a.redo_from);
        data::save_verify_cache(shards, shards_cache);
      } else {
        // A folder that holds no run gets no lock file beside it.
        pipeline::RunDir::existing(a.run_dir);
        lock = pipeline::RunLock::acquire(a.run_dir);
        run = pipeline::RunDir::existing(a.run_dir);
        cfg = Config::from_yaml_text(run.saved_config_yaml(), run.file("config.yaml"), a.sets);
        auto diffs = pipeline::config_differences(run.saved_config_yaml(), cfg);
        SMOE_CHECK(diffs.empty(), "smoe eval: only eval.* and runtime.* keys may change ({})", fmt::join(diffs, "; "));
        auto shards = data::load_verify_cache(shards_cache);
        pipeline::check_shards(cfg, data::Manifest::load(cfg.data.path), shards);
        data::save_verify_cache(shards, shards_cache);
      }
      manifest = run.manifest_text();
      config_yaml = cfg.to_yaml(false);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm.broadcast_bytes(error, 0);
  if (!error.empty()) {
    if (comm.is_root()) throw Error(error);
    return 1;
  }
  comm.broadcast_bytes(manifest, 0);
  comm.broadcast_bytes(config_yaml, 0);
  if (!comm.is_root()) {
    cfg = Config::from_yaml_text(config_yaml, "rank 0's config", {});
    run = pipeline::RunDir::attach(a.run_dir, manifest);
  }
  // Every rank must see the run folder rank 0 wrote (a shared file system).
  std::string unseen;
  if (!comm.is_root() && !pipeline::wait_for_file(run.file("run.json"), 10.0))
    unseen = fmt::format("rank {} on host {} does not see the run folder {} that rank 0 wrote: put it on a file system "
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
    auto rt = pipeline::setup_runtime(cfg.runtime, rank, comm.size(), mpi.local_rank(), mpi.local_size());
    log::info("smoe {}: {} rank{} ({}), {} thread{} per rank, device {}, run folder {}", cmd, comm.size(),
              comm.size() == 1 ? "" : "s", comm.name(), rt.threads, rt.threads == 1 ? "" : "s", rt.device_name(),
              a.run_dir);
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
      p.train();
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

// sweep: every run of a sweep file, one after another, each a normal run
// folder under --out; earlier stages shared where configs allow
// (pipeline/sweep.h); finished runs skipped. Then the table of the sweep.
int cmd_sweep(const std::vector<std::string>& args, int& argc, char**& argv) {
  std::string file, out;
  bool verbose = false, quiet = false;
  po::options_description opts("smoe sweep SWEEP_FILE --out DIR");
  opts.add_options()("help,h", "this help")                                                    //
      ("sweep", po::value(&file)->required(), "the sweep file (YAML: config, set, grid, seeds)")  //
      ("out", po::value(&out)->required(), "the sweep folder: one run folder per run")            //
      ("verbose,v", po::bool_switch(&verbose), "debug messages")                                  //
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
  comm::MpiRuntime mpi(&argc, &argv);
  comm::DeviceRouter comm(mpi.world());
  // Every rank reads the sweep file (the same text gives the same runs).
  std::string error;
  pipeline::Sweep sweep;
  try {
    sweep = pipeline::load_sweep(file);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) {
    if (comm.is_root()) throw Error(error);
    return 1;
  }
  namespace fs = std::filesystem;
  auto dir_of = [&](size_t i) { return (fs::path(out) / sweep.runs[i].name).string(); };
  auto finished = [&](size_t j, const std::string& stage) {
    return fs::exists(fs::path(dir_of(j)) / "run.json") && pipeline::RunDir::existing(dir_of(j)).done(stage);
  };
  for (size_t i = 0; i < sweep.runs.size(); ++i) {
    Args a;
    a.config = sweep.config_path;
    a.sets = sweep.runs[i].sets;
    a.run_dir = dir_of(i);
    a.verbose = verbose;
    a.quiet = quiet;
    // Rank 0 decides what the run needs and prepares its folder.
    std::string action;
    if (comm.is_root()) {
      try {
        if (fs::exists(fs::path(a.run_dir) / "report.json")) {
          action = "done";
        } else if (fs::exists(fs::path(a.run_dir) / "run.json")) {
          action = "resume";
        } else {
          const pipeline::SweepStart start = pipeline::sweep_start(sweep, i, finished);
          action = "fresh";
          if (start.from >= 0) {
            // Its earlier stages are those of run `from`: start from a copy of its folder.
            std::error_code ec;
            fs::remove_all(a.run_dir, ec);
            fs::create_directories(out);
            fs::copy(dir_of(static_cast<size_t>(start.from)), a.run_dir, fs::copy_options::recursive);
            for (const auto& e : fs::directory_iterator(a.run_dir)) {
              const std::string n = e.path().filename().string();
              if (n == "report.json" || n.rfind("log", 0) == 0 || e.path().extension() == ".png")
                fs::remove(e.path());
            }
            action = "copy " + start.redo_from + " " + sweep.runs[static_cast<size_t>(start.from)].name;
          }
        }
      } catch (const std::exception& e) {
        action = std::string("error ") + e.what();
      }
    }
    comm.broadcast_bytes(action, 0);
    if (action.rfind("error ", 0) == 0) {
      if (comm.is_root()) throw Error(action.substr(6));
      return 1;
    }
    if (action == "done") {
      if (comm.is_root() && !quiet) std::cout << fmt::format("sweep: {} already finished\n", sweep.runs[i].name);
      continue;
    }
    a.resume = action != "fresh";
    if (action.rfind("copy ", 0) == 0) {
      const std::string rest = action.substr(5);
      a.redo_from = rest.substr(0, rest.find(' '));
      if (comm.is_root() && !quiet)
        std::cout << fmt::format("sweep: {} starts from {}'s finished stages{}\n", sweep.runs[i].name,
                                 rest.substr(rest.find(' ') + 1),
                                 a.redo_from.empty() ? " (only the evaluation differs)" : ", redoing from " + a.redo_from);
    } else if (comm.is_root() && !quiet) {
      std::cout << fmt::format("sweep: {} ({} of {})\n", sweep.runs[i].name, i + 1, sweep.runs.size());
    }
    std::cout.flush();
    const int rc = run_job(mpi, comm, "train", a);
    if (rc != 0) return rc;
  }
  if (comm.is_root()) {
    std::vector<eval::RunRow> runs;
    for (size_t i = 0; i < sweep.runs.size(); ++i) runs.push_back(eval::read_run(dir_of(i)));
    const eval::RunTable t = eval::make_table(runs);
    std::cout << eval::to_markdown(t);
    write_file_atomic((fs::path(out) / "table.csv").string(), eval::to_csv(t));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
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
