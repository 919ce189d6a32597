// The quick pipeline in one process: configs/fmnist-quick.yaml scaled down
// to a small synthetic dataset (16x16 images, 4 classes) and trained on two
// ranks as threads, the way `smoe train` runs it under mpirun.
#pragma once

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/thread_communicator.h"
#include "common/make_dataset.h"
#include "core/atomic_file.h"
#include "pipeline/config.h"
#include "pipeline/pipeline.h"
#include "pipeline/run_dir.h"

namespace smoe::testing {

inline std::string source_dir() {
  const char* s = std::getenv("SMOE_SOURCE_DIR");
  return s ? s : SMOE_TEST_SOURCE_DIR;
}

// A synthetic dataset under `dir` (made once per folder).
inline std::string quick_dataset(const std::string& dir) {
  const std::string data = dir + "/data";
  if (!std::filesystem::exists(data + "/manifest.json")) {
    SyntheticSpec spec;
    spec.train = 256;
    spec.test = 96;
    spec.shape = {1, 16, 16};
    spec.shard_size = 128;
    make_dataset(data, spec);
  }
  return data;
}

// The quick config on that dataset, one or two epochs per stage, plus `overrides`.
inline Config quick_config(const std::string& data, const std::vector<std::string>& overrides) {
  std::vector<std::string> o = {
      "data.path=" + data,      "data.limit_train=0", "data.limit_test=0",     "model.width=4",      "base.epochs=1",
      "base.bn_calibration=64", "experts.count=3",    "experts.epochs=1",      "ensembler.epochs=1", "gate.epochs=2",
      "cluster.restarts=1",     "eval.batch_size=64", "runtime.log_every=1000"};
  o.insert(o.end(), overrides.begin(), overrides.end());
  return Config::load(source_dir() + "/configs/fmnist-quick.yaml", o);
}

// Trains `config` into run folder `run_dir` on `ranks` thread ranks (or
// resumes it, with OpenMode::resume), on `device`; returns report.json (null when the
// scheme writes none).
inline nlohmann::json train_quick(const Config& config, const std::string& run_dir, int ranks = 2,
                                  pipeline::OpenMode mode = pipeline::OpenMode::fresh,
                                  c10::Device device = c10::Device(c10::kCPU)) {
  // A quick run's progress lines (about 40 a run) would bury a failing
  // assertion's message in a CI log that keeps only its head and tail:
  // warnings and errors only, every line with SMOE_TEST_VERBOSE=1.
  spdlog::set_level(std::getenv("SMOE_TEST_VERBOSE") ? spdlog::level::info : spdlog::level::warn);
  comm::run_ranks(ranks, [&](comm::Communicator& comm) {
    // Each rank sets its intra-op threads, as smoe's ranks do at start-up
    // (pipeline/runtime.h): OpenMP's thread count is per thread, and a rank
    // thread would otherwise run its kernels on the default count.
    at::set_num_threads(1);
    pipeline::RunDir run;
    std::string manifest;
    if (comm.is_root()) {
      run = pipeline::RunDir::open_root(run_dir, config, mode);
      manifest = run.manifest_text();
    }
    comm.broadcast_bytes(manifest, 0);
    if (!comm.is_root()) run = pipeline::RunDir::attach(run_dir, manifest);
    pipeline::RuntimeInfo rt;
    rt.rank = comm.rank();
    rt.world = comm.size();
    rt.device = device;
    pipeline::Pipeline p(config, comm, run, rt);
    p.train();
  });
  const std::string report = run_dir + "/report.json";
  return std::filesystem::exists(report) ? nlohmann::json::parse(read_file(report)) : nlohmann::json();
}

inline nlohmann::json run_json(const std::string& run_dir) {
  return nlohmann::json::parse(read_file(run_dir + "/run.json"));
}

}  // namespace smoe::testing
