// smoe: train and evaluate single-gate Mixtures of Experts.
//
//   smoe train  [--config FILE] --run-dir DIR [--set key=value ...] [--resume | --force]
//   smoe eval   --run-dir DIR [--set eval.taus=[...] ...]
//   smoe config --print [--config FILE] [--set key=value ...]
//   smoe config --keys [--markdown | --json]
//   smoe table  [--csv FILE] [--plot PNG] [--metric PATH ...] RUN_OR_FOLDER ...
//   smoe sweep  SWEEP_FILE --out DIR [--ranks-per-run N] [--dry-run]
//   smoe scaling --config FILE --ranks 1,2,4 [--mode strong|weak] [--stages S,...] --out DIR
//   smoe scaling --table DIR
//   smoe --version
//
// `train` and `eval` run under mpirun/srun (one rank per process) or alone.
#include <boost/program_options.hpp>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include "apps/cli.h"
#include "comm/mpi_communicator.h"
#include "comm/router.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/stop.h"
#include "eval/run_plot.h"
#include "eval/run_table.h"
#include "pipeline/config.h"
#include "pipeline/config_reference.h"
#include "pipeline/export.h"
#include "pipeline/job.h"
#include "pipeline/predict.h"
#include "pipeline/provenance.h"
#include "pipeline/scaling_study.h"
#include "pipeline/stage.h"
#include "pipeline/sweep.h"
#include "pipeline/sweep_driver.h"

namespace po = boost::program_options;
using namespace smoe;

namespace {

const char* kUsage =
    "usage:\n"
    "  smoe train  [--config FILE] --run-dir DIR [--set key=value ...] [--resume | --force]\n"
    "  smoe eval   --run-dir DIR [--set key=value ...]\n"
    "  smoe config --print [--config FILE] [--set key=value ...]\n"
    "  smoe config --keys [--markdown | --json]\n"
    "  smoe table  [--csv FILE] [--plot PNG] [--metric PATH ...] RUN_OR_FOLDER ...   mean ± std over seeds\n"
    "  smoe sweep  SWEEP_FILE --out DIR [--ranks-per-run N] [--dry-run]          a grid of overrides x seeds, then its "
    "table\n"
    "  smoe scaling --config FILE --ranks 1,2,4 [--mode strong|weak] [--stages S,...] --out DIR   a scaling "
    "study\n"
    "  smoe scaling --table DIR   a study's table, plots and predictions again\n"
    "  smoe export --run-dir DIR --out FILE [--rule R] [--tau T] [--ensembler E]   the MoE as one TorchScript file\n"
    "  smoe predict --run-dir DIR --input DATASET --out PRED.h5 [--split S] [--rule R] [--tau T] [--probs]\n"
    "  smoe --version\n"
    "Run `smoe COMMAND --help` for a command's options.\n";

struct Args {
  pipeline::JobRequest job;                                          // train and eval
  bool print = false, keys = false, markdown = false, json = false;  // config
};

// Every config key at its default, flattened: what `smoe table` assumes for
// a key that a run's config.yaml predates.
const std::map<std::string, std::string>& config_defaults() {
  static const std::map<std::string, std::string> defaults = flat_yaml(Config::defaults().to_yaml(false));
  return defaults;
}

bool wants_help(const std::vector<std::string>& args) {
  return std::find_if(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; }) !=
         args.end();
}

Args parse(const std::string& cmd, const std::vector<std::string>& argv, bool& help) {
  Args a;
  po::options_description opts("smoe " + cmd);
  opts.add_options()("help,h", "this help");
  if (cmd == "train" || cmd == "config")
    opts.add_options()("config", po::value(&a.job.config),
                       "experiment YAML file (default: every key's default, then --set)");
  if (cmd != "config") opts.add_options()("run-dir", po::value(&a.job.run_dir)->required(), "run folder");
  opts.add_options()("set", po::value(&a.job.sets)->composing(), "override a config key: --set experts.count=8");
  if (cmd == "train")
    opts.add_options()("resume", po::bool_switch(&a.job.resume), "continue the run in --run-dir")  //
        ("force", po::bool_switch(&a.job.force), "delete the run in --run-dir and start over")     //
        ("redo-from", po::value(&a.job.redo_from),
         "with --resume: redo this stage and every later one of the scheme (base, embed, cluster, gate, experts, "
         "em)")  //
        ("until", po::value(&a.job.until),
         "stop after this stage of the scheme (e.g. base: train the base model only); --resume continues");
  if (cmd == "config")
    opts.add_options()("print", po::bool_switch(&a.print), "print the resolved config as YAML")  //
        ("keys", po::bool_switch(&a.keys), "list every key with its type, default and doc")(
            "markdown", po::bool_switch(&a.markdown), "with --keys: the Markdown of docs/configuration.md")(
            "json", po::bool_switch(&a.json), "with --keys: JSON, with each key's range and accepted names");
  if (cmd != "config")
    opts.add_options()("verbose,v", po::bool_switch(&a.job.verbose), "debug messages")  //
        ("quiet,q", po::bool_switch(&a.job.quiet), "warnings and errors only");
  help = wants_help(argv);
  if (help) {
    std::cout << opts;
    return a;
  }
  po::variables_map vm;
  po::store(po::command_line_parser(argv).options(opts).run(), vm);
  po::notify(vm);
  if (cmd == "train") {
    SMOE_CHECK(!(a.job.resume && a.job.force), "--resume and --force exclude each other");
    SMOE_CHECK(a.job.redo_from.empty() || a.job.resume, "--redo-from needs --resume");
  }
  return a;
}

int cmd_config(const Args& a) {
  if (a.keys) {
    if (a.markdown) {
      std::cout << pipeline::config_reference_markdown();
      return 0;
    }
    if (a.json) {
      std::cout << pipeline::config_reference_json();
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
  Config cfg = Config::load(a.job.config, a.job.sets);
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
    for (const auto& dir : eval::find_runs(p)) runs.push_back(eval::read_run(dir, metrics, config_defaults()));
  SMOE_CHECK(std::any_of(runs.begin(), runs.end(), [](const eval::RunRow& r) { return !r.metrics.empty(); }),
             "smoe table: none of the {} runs has {}", runs.size(),
             metrics.empty() ? std::string("an accuracy in its report.json") : "the metrics asked for");
  const eval::RunTable t = eval::make_table(runs, metrics);
  std::cout << eval::to_markdown(t);
  if (!csv.empty()) write_file_atomic(csv, eval::to_csv(t));
  if (!plot.empty()) eval::plot_table(t, plot, "accuracy vs MACs");
  return 0;
}

int cmd_run(const std::string& cmd, Args a, int& argc, char**& argv) {
  comm::MpiRuntime mpi(&argc, &argv);
  comm::DeviceRouter comm(mpi.world());
  a.job.command = cmd;
  return pipeline::run_job(mpi, comm, a.job);
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
  if (dry_run) return pipeline::print_sweep_plan(pipeline::load_sweep(file), out);
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
  const int rc = pipeline::run_sweep(mpi, world, sweep, out, per_run == 0 ? world.size() : per_run, verbose, quiet);
  if (rc == kResumableExit && world.is_root())
    std::cerr << fmt::format("smoe sweep: stopped on a signal; run the same command again to continue (exit {})\n",
                             kResumableExit);
  if (rc != 0) return rc;
  if (world.is_root()) {
    std::vector<eval::RunRow> runs;
    for (size_t i = 0; i < sweep.runs.size(); ++i)
      runs.push_back(eval::read_run((std::filesystem::path(out) / sweep.runs[i].name).string(), {}, config_defaults()));
    const eval::RunTable t = eval::make_table(runs);
    std::cout << eval::to_markdown(t);
    write_file_atomic((std::filesystem::path(out) / "table.csv").string(), eval::to_csv(t));
    eval::plot_table(t, (std::filesystem::path(out) / "accuracy_macs.png").string(),
                     std::filesystem::path(file).stem().string());
  }
  return 0;
}

// Parses `args` into `vm`; false (the options printed) when they ask for --help.
bool parse_or_help(const po::options_description& opts, const std::vector<std::string>& args, po::variables_map& vm) {
  if (wants_help(args)) {
    std::cout << opts;
    return false;
  }
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  po::notify(vm);
  return true;
}

// The number `text` spells whole (no trailing characters), if it does.
std::optional<double> number_of(const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  return used == text.size() ? std::optional<double>(v) : std::nullopt;
}

// "1,2,4" (and repeated flags) as whole numbers, or as the words
// themselves; fails naming the flag.
template <typename T>
std::vector<T> comma_list(const std::vector<std::string>& values, const char* flag) {
  std::vector<T> out;
  for (const auto& v : values) {
    std::stringstream in(v);
    std::string item;
    while (std::getline(in, item, ',')) {
      if (item.empty()) continue;
      if constexpr (std::is_same_v<T, std::string>) {
        out.push_back(item);
      } else {
        const std::optional<double> n = number_of(item);
        SMOE_CHECK(n && *n == std::floor(*n) && std::abs(*n) < 1e9, "smoe scaling: {} {}: '{}' is not a whole number",
                   flag, v, item);
        out.push_back(static_cast<T>(*n));
      }
    }
  }
  return out;
}

// scaling: a scaling study over rank counts (pipeline/scaling_study.h), or
// its outputs again from its folder (pipeline/scaling_table.h).
int cmd_scaling(const std::vector<std::string>& args, int& argc, char**& argv) {
  pipeline::ScalingRequest r;
  std::vector<std::string> ranks, stages, predict, work;
  std::string table, mode;
  double latency_us = -1, bandwidth = -1;
  po::options_description opts("smoe scaling --config FILE --ranks 1,2,4 --out DIR  (under mpirun -np 4)");
  opts.add_options()("help,h", "this help")                                                           //
      ("config", po::value(&r.config), "experiment YAML file")                                        //
      ("set", po::value(&r.sets)->composing(), "override a config key for every run")                 //
      ("ranks", po::value(&ranks)->composing(), "rank counts, e.g. 1,2,4 (at most the job's ranks)")  //
      ("mode", po::value(&mode)->default_value("strong"),
       "strong: the same work at every P; weak: data.limit_train (N0) x P training samples")  //
      ("stages", po::value(&stages)->composing(),
       "the stages to time, e.g. experts,eval (default: every stage of the scheme); earlier ones run once")       //
      ("out", po::value(&r.out), "the study's folder: P<P>/ run folders, study.json, scaling.md/.csv/.png")       //
      ("table", po::value(&table), "only write the outputs of the finished study in this folder again (no MPI)")  //
      ("predict", po::value(&predict)->composing(), "rank counts to predict beyond (default 64,256,1024)")        //
      ("work-scale", po::value(&work)->composing(),
       "with --table: predict for F times the work measured, for one stage (STAGE=F) or every stage (F); e.g. "
       "the full config's samples x epochs over a short study's")  //
      ("latency-us", po::value(&latency_us),
       "collective model: latency per message in microseconds (default: measured on the job's ranks)")  //
      ("bandwidth-gbs", po::value(&bandwidth),
       "collective model: bandwidth in GB/s (default: measured on the job's ranks)")  //
      ("verbose,v", po::bool_switch(&r.verbose), "debug messages")                    //
      ("quiet,q", po::bool_switch(&r.quiet), "warnings and errors only");
  po::variables_map vm;
  if (!parse_or_help(opts, args, vm)) return 0;
  SMOE_CHECK((latency_us < 0) == (bandwidth < 0), "smoe scaling: give --latency-us and --bandwidth-gbs together");
  if (latency_us >= 0) {
    SMOE_CHECK(bandwidth > 0, "smoe scaling: --bandwidth-gbs {} must be positive", bandwidth);
    r.collectives = {latency_us * 1e-6, 1e-9 / bandwidth, "given"};
  }
  if (!predict.empty()) r.predict_at = comma_list<int>(predict, "--predict");
  pipeline::WorkScale scale;
  for (const auto& w : work) {
    const size_t eq = w.find('=');
    const std::string stage = eq == std::string::npos ? "" : w.substr(0, eq);
    const std::optional<double> f = number_of(eq == std::string::npos ? w : w.substr(eq + 1));
    SMOE_CHECK(f.has_value(), "smoe scaling: --work-scale {}: expected STAGE=F or F, F a number", w);
    scale[stage] = *f;
  }
  SMOE_CHECK(scale.empty() || !table.empty(), "smoe scaling: --work-scale goes with --table DIR");
  if (!table.empty()) return pipeline::write_scaling_study(table, r.collectives, r.predict_at, scale);
  SMOE_CHECK(!r.out.empty() && !ranks.empty(), "smoe scaling: give --ranks and --out (or --table DIR)");
  const auto parsed_mode = options::from_name<pipeline::ScalingMode>(mode);
  SMOE_CHECK(parsed_mode.has_value(), "smoe scaling: --mode {}: expected strong or weak", mode);
  r.mode = *parsed_mode;
  r.ranks = comma_list<int>(ranks, "--ranks");
  r.stages = comma_list<std::string>(stages, "--stages");
  comm::MpiRuntime mpi(&argc, &argv);
  comm::DeviceRouter world(mpi.world());
  return pipeline::run_scaling(mpi, world, r);
}

// export: a finished run's MoE as one TorchScript file (pipeline/export.h).
int cmd_export(const std::vector<std::string>& args) {
  pipeline::ExportRequest r;
  double tau = -1;
  po::options_description opts("smoe export --run-dir DIR --out FILE");
  opts.add_options()("help,h", "this help")                                          //
      ("run-dir", po::value(&r.run_dir)->required(), "a finished run folder")        //
      ("out", po::value(&r.out)->required(), "the TorchScript file to write (.pt)")  //
      ("rule", po::value(&r.rule),
       "forward()'s rule: base, top1, top2 or anytime (default); for a jointly trained MoE mixture (default), top1 "
       "or top2 (an attribute of the file: changeable after loading)")  //
      ("tau", po::value(&tau),
       "the anytime threshold in [0, 1] (an attribute too; default: the report's tau at the base model's "
       "accuracy, else its best tau)")  //
      ("ensembler", po::value(&r.ensembler),
       "the ensembler inside top1 and anytime, or none (the expert alone; default: the run's ensembler.kind)")  //
      ("force", po::bool_switch(&r.force), "replace --out if it exists");
  po::variables_map vm;
  if (!parse_or_help(opts, args, vm)) return 0;
  if (vm.count("tau")) r.tau = tau;
  std::cout << pipeline::export_run(r) << "\n";
  return 0;
}

// predict: a finished run's MoE on a dataset folder, rows written per rank
// (pipeline/predict.h).
int cmd_predict(const std::vector<std::string>& args, int& argc, char**& argv) {
  pipeline::PredictRequest r;
  double tau = -1;
  po::options_description opts("smoe predict --run-dir DIR --input DATASET --out PRED.h5");
  opts.add_options()("help,h", "this help")                                                                   //
      ("run-dir", po::value(&r.run_dir)->required(), "a finished run folder")                                 //
      ("input", po::value(&r.input)->required(), "a dataset folder (smoe-data convert makes one)")            //
      ("split", po::value(&r.split), "the input's split (default: the run's data.test_split)")                //
      ("out", po::value(&r.out)->required(), "the HDF5 file to write")                                        //
      ("limit", po::value(&r.limit)->default_value(0), "the first N samples of the split (0: all)")           //
      ("rule", po::value(&r.rule), "base, top1, top2 or anytime (default); mixture (default), top1 or top2")  //
      ("tau", po::value(&tau), "the anytime threshold (default: the report's tau at the base accuracy)")      //
      ("ensembler", po::value(&r.ensembler), "inside top1 and anytime, or none (default: the run's)")         //
      ("probs", po::bool_switch(&r.probs), "also write the class probabilities [N, C]")                       //
      ("force", po::bool_switch(&r.force), "replace --out if it exists")                                      //
      ("set", po::value(&r.sets)->composing(), "override a runtime.* or eval.* key: --set runtime.device=cuda");
  po::variables_map vm;
  if (!parse_or_help(opts, args, vm)) return 0;
  if (vm.count("tau")) r.tau = tau;
  comm::MpiRuntime mpi(&argc, &argv);
  comm::DeviceRouter world(mpi.world());
  return pipeline::run_predict(mpi, world, r);
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
    SMOE_CHECK(cmd == "train" || cmd == "eval" || cmd == "config" || cmd == "table" || cmd == "sweep" ||
                   cmd == "scaling" || cmd == "export" || cmd == "predict",
               "unknown command '{}' (expected train, eval, config, table, sweep, scaling, export or predict)", cmd);
    if (cmd == "scaling") return cmd_scaling(std::vector<std::string>(args.begin() + 1, args.end()), argc, argv);
    if (cmd == "predict") return cmd_predict(std::vector<std::string>(args.begin() + 1, args.end()), argc, argv);
    if (cmd == "export") return cmd_export(std::vector<std::string>(args.begin() + 1, args.end()));
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
