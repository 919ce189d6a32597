#include "pipeline/scaling_study.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "comm/router.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/stop.h"
#include "data/manifest.h"
#include "pipeline/config.h"
#include "pipeline/job.h"
#include "pipeline/protocol.h"
#include "pipeline/run_dir.h"
#include "pipeline/stage.h"

namespace smoe::pipeline {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string prefix_dir(const std::string& out) { return (fs::path(out) / "prefix").string(); }

// Rank 0: the study checked against the config and the job, before anything
// is written. What every rank needs travels in the returned JSON (study.json).
json plan_study(const ScalingRequest& r, int job_ranks) {
  SMOE_CHECK(!r.ranks.empty(), "smoe scaling: --ranks: give at least one rank count");
  for (size_t i = 0; i < r.ranks.size(); ++i) {
    SMOE_CHECK(r.ranks[i] >= 1, "smoe scaling: --ranks: {} is not a rank count", r.ranks[i]);
    SMOE_CHECK(i == 0 || r.ranks[i] > r.ranks[i - 1], "smoe scaling: --ranks must increase without repeats ({})",
               fmt::join(r.ranks, ","));
  }
  SMOE_CHECK(r.ranks.back() <= job_ranks,
             "smoe scaling: --ranks asks for {} ranks but the job has {}: start it with mpirun -np {} (or srun -n "
             "{})",
             r.ranks.back(), job_ranks, r.ranks.back(), r.ranks.back());
  for (int P : r.predict_at) SMOE_CHECK(P >= 1, "smoe scaling: --predict: {} is not a rank count", P);
  const Config cfg = Config::load(r.config, r.sets);
  check_config(cfg);
  std::vector<std::string> scheme, fixed_work;
  for (const auto& st : scheme_plan(cfg)) {
    scheme.push_back(st.name);
    if (!st.recorded) fixed_work.push_back(st.name);  // the evaluation: the test split, whatever the training set
  }
  std::vector<std::string> stages = r.stages.empty() ? scheme : r.stages;
  for (const auto& s : stages)
    SMOE_CHECK(std::find(scheme.begin(), scheme.end(), s) != scheme.end(),
               "smoe scaling: --stages: '{}' is not a stage of scheme '{}' ({})", s, cfg.scheme,
               fmt::join(scheme, ", "));
  std::sort(stages.begin(), stages.end(), [&](const std::string& a, const std::string& b) {
    return std::find(scheme.begin(), scheme.end(), a) < std::find(scheme.begin(), scheme.end(), b);
  });
  stages.erase(std::unique(stages.begin(), stages.end()), stages.end());
  const auto first = std::find(scheme.begin(), scheme.end(), stages.front());
  json plan = {{"format", "smoe-scaling"},
               {"version", 1},
               {"config", r.config},
               {"config_sha256", sha256_hex(cfg.to_yaml(false))},
               {"sets", r.sets},
               {"mode", options::name(r.mode)},
               {"ranks", r.ranks},
               {"stages", stages},
               {"scheme", cfg.scheme},
               {"first_stage", *first},
               {"prefix_until", first == scheme.begin() ? std::string() : *(first - 1)},
               {"job_ranks", job_ranks},
               {"fixed_work_stages", fixed_work}};
  if (r.mode == ScalingMode::weak) {
    const int64_t n0 = cfg.data.limit_train;
    SMOE_CHECK(n0 > 0,
               "smoe scaling --mode weak: set data.limit_train to the training samples per rank (N0; rank count P "
               "trains on N0 P)");
    const data::Manifest m = data::Manifest::load(cfg.data.path);
    const int64_t have = m.split(cfg.data.train_split).count;
    SMOE_CHECK(n0 * r.ranks.back() <= have,
               "smoe scaling --mode weak: data.limit_train {} x {} ranks = {} samples, but split '{}' of {} has {}", n0,
               r.ranks.back(), n0 * r.ranks.back(), cfg.data.train_split, cfg.data.path, have);
    plan["limit_train_per_rank"] = n0;
  }
  json per_rank = json::object();
  for (int P : r.ranks) {
    std::vector<std::string> sets = r.sets;
    if (r.mode == ScalingMode::weak) sets.push_back(fmt::format("data.limit_train={}", cfg.data.limit_train * P));
    per_rank[std::to_string(P)] = sets;
  }
  plan["run_sets"] = per_rank;
  // A folder that holds another study is not mixed with this one.
  const fs::path study = fs::path(r.out) / "study.json";
  if (fs::exists(study)) {
    std::ifstream in(study);
    json old = json::parse(in, nullptr, false);
    SMOE_CHECK(!old.is_discarded() && old.value("format", "") == "smoe-scaling",
               "smoe scaling: {} is not a study file; give another --out", study.string());
    for (const auto& [key, what] : std::vector<std::pair<const char*, const char*>>{
             {"mode", "mode"}, {"stages", "stage list"}, {"config_sha256", "config"}, {"sets", "overrides"}})
      SMOE_CHECK(old.value(key, json()) == plan[key],
                 "smoe scaling: {} holds a study with another {} ({}); give another --out", r.out, what,
                 old.value(key, json()).dump());
  } else if (fs::exists(r.out)) {
    SMOE_CHECK(fs::is_directory(r.out) && fs::is_empty(r.out),
               "smoe scaling: --out {} exists and holds no study; give a new or empty folder", r.out);
  }
  return plan;
}

class Study {
 public:
  Study(comm::MpiRuntime& mpi, comm::Communicator& world, const ScalingRequest& r, json plan)
      : mpi_(mpi), world_(world), r_(r), plan_(std::move(plan)) {}

  int run() {
    StopScope stop_scope;
    const std::string first = plan_["first_stage"], until = plan_["prefix_until"];
    const bool weak = r_.mode == ScalingMode::weak;
    // A strong study's earlier stages: once, on every rank.
    if (!until.empty() && !weak && !root_says(world_.is_root() && stage_done(prefix_dir(r_.out), until))) {
      say(fmt::format("stages up to {} once, on all {} ranks, in {}", until, world_.size(), prefix_dir(r_.out)));
      const bool started = root_says(fs::exists(fs::path(prefix_dir(r_.out)) / "run.json"));
      const int rc = job(world_.size(), prefix_dir(r_.out), sets_of(r_.ranks.back()), started, "", until);
      if (rc != 0) return rc;
    }
    int rc = 0;
    for (int P : r_.ranks) {
      const std::string dir = study_run_dir(r_.out, P);
      if (root_says(fs::exists(fs::path(dir) / "report.json"))) {
        say(fmt::format("P={} already finished ({})", P, dir));
        continue;
      }
      // The earlier stages of a weak study: with every rank, at this P's size.
      if (!until.empty() && weak && !root_says(world_.is_root() && stage_done(dir, until))) {
        say(fmt::format("P={}: stages up to {} on all {} ranks", P, until, world_.size()));
        rc = job(world_.size(), dir, sets_of(P), root_says(fs::exists(fs::path(dir) / "run.json")), "", until);
        if (rc != 0) return rc;
      }
      bool resume = root_says(fs::exists(fs::path(dir) / "run.json"));
      if (!until.empty() && !weak && !resume) {
        // A failed copy (a full disk) ends every rank, not only rank 0.
        std::string error;
        if (world_.is_root()) {
          try {
            copy_finished_stages(prefix_dir(r_.out), dir);
          } catch (const std::exception& e) {
            error = fmt::format("smoe scaling: cannot copy {} to {}: {}", prefix_dir(r_.out), dir, e.what());
          }
        }
        if (root_error_ends_job(world_, error)) return 1;
        resume = true;
      }
      say(fmt::format("P={}: {} on {} rank{}", P, fmt::join(plan_["stages"].get<std::vector<std::string>>(), ", "), P,
                      P == 1 ? "" : "s"));
      rc = job(P, dir, sets_of(P), resume, resume ? first : "", "");
      if (rc != 0) return rc;
    }
    return rc;
  }

 private:
  std::vector<std::string> sets_of(int P) const {
    return plan_["run_sets"][std::to_string(P)].get<std::vector<std::string>>();
  }
  bool stage_done(const std::string& dir, const std::string& stage) const {
    return fs::exists(fs::path(dir) / "run.json") && RunDir::existing(dir).done(stage);
  }
  // What world rank 0 sees of the folders, on every rank (a network file
  // system may show another rank an older view).
  bool root_says(bool seen) {
    std::string v = seen ? "1" : "0";
    world_.broadcast_bytes(v, 0);
    return v == "1";
  }
  void say(const std::string& line) const {
    if (world_.is_root() && !r_.quiet) std::cout << "scaling: " << line << "\n" << std::flush;
  }

  // Every rank: a job on the world's first P ranks; the others wait without
  // taking a core until world rank 0 tells them its exit status.
  int job(int P, const std::string& dir, const std::vector<std::string>& sets, bool resume,
          const std::string& redo_from, const std::string& until) {
    const bool member = world_.rank() < P;
    std::unique_ptr<comm::Communicator> group = mpi_.split_world(member ? 0 : -1);
    int rc = 1;
    std::exception_ptr error;
    if (member) {
      JobRequest a;
      a.command = "train";
      a.config = r_.config;
      a.sets = sets;
      a.run_dir = dir;
      a.resume = resume;
      a.redo_from = redo_from;
      a.until = until;
      a.verbose = r_.verbose;
      a.quiet = r_.quiet;
      comm::DeviceRouter router(std::move(group));
      try {
        rc = run_job(mpi_, router, a);
      } catch (...) {
        error = std::current_exception();  // rank 0's error before the run started
      }
      if (world_.is_root())
        for (int q = P; q < world_.size(); ++q) world_.send(q, kScalingExitTag, std::to_string(rc));
    } else {
      rc = std::stoi(world_.recv_idle(0, kScalingExitTag).payload);
    }
    if (error) std::rethrow_exception(error);
    return rc;
  }

  comm::MpiRuntime& mpi_;
  comm::Communicator& world_;
  const ScalingRequest& r_;
  json plan_;
};

}  // namespace

int run_scaling(comm::MpiRuntime& mpi, comm::Communicator& world, const ScalingRequest& request) {
  std::string error, text;
  json plan;
  if (world.is_root()) {
    try {
      plan = plan_study(request, world.size());
      text = plan.dump();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (root_error_ends_job(world, error)) return 1;
  world.broadcast_bytes(text, 0);
  plan = json::parse(text);
  // The collective constants of this job's ranks, unless given.
  CollectiveModel collectives = request.collectives;
  if (!collectives.known()) collectives = measure_collectives(world);
  if (world.is_root()) {
    plan["collectives"] = {{"latency_s", collectives.latency_s},
                           {"seconds_per_byte", collectives.seconds_per_byte},
                           {"source", request.collectives.known() ? "given" : collectives.source}};
    try {
      fs::create_directories(request.out);
      write_file_atomic((fs::path(request.out) / "study.json").string(), plan.dump(2) + "\n");
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (root_error_ends_job(world, error)) return 1;
  Study study(mpi, world, request, plan);
  int rc = study.run();
  if (rc != 0) {
    if (world.is_root())
      std::cerr << fmt::format("smoe scaling: {}; run the same command again to continue (exit {})\n",
                               rc == kResumableExit ? "stopped on a signal" : "a run failed", rc);
    return rc;
  }
  // The outputs, by rank 0; an error there ends every rank too.
  if (world.is_root()) {
    try {
      rc = write_scaling_study(request.out, CollectiveModel{}, request.predict_at);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (root_error_ends_job(world, error)) return 1;
  std::string status = std::to_string(rc);
  world.broadcast_bytes(status, 0);
  return std::stoi(status);
}

}  // namespace smoe::pipeline
